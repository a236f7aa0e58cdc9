"""Patching a task: the baseline, the sweep its config asks for, and the run behind every command.

`patch_task` patches one target of any task (`interp.datasets.TaskBatch`) with the activation or
attribution sweep (`interp.experiments.patching.sweeps`) and returns a `PatchResult`. `run` is
the experiment's runner: it builds the config's task (a generated one or a pairs file), resumes
activation patches from the store's ``patch_log.jsonl`` (one record per forward pass, one part
per rank), and adds the resid_pre x position map when the config asks for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence, Union

from torch import Tensor

from interp.analyses.patching.circuits import method_correlation
from interp.analyses.patching.config import METHODS, PatchConfig
from interp.analyses.patching.metrics import Metric, evaluate_metric, make_metric
from interp.analyses.patching.plan import target_index
from interp.analyses.patching.results import PatchResult, baseline_checks, dense_scores
from interp.datasets.tasks import TaskBatch, make_task, pairs_digest, task_from_jsonl
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.experiments.patching.sweeps import (
    OnPass,
    Patch,
    activation_patching,
    attribution_patching,
    check_pair,
    task_baseline,
)
from interp.models import Model

__all__ = ["resolve_metric", "patch_task", "task_for", "run", "LOG_NAME"]

LOG_NAME = "patch_log.jsonl"  # activation patches, one record per forward pass (resume)


def resolve_metric(
    metric: Union[str, Metric], batch: TaskBatch, clean_logits: Tensor, corrupt_logits: Tensor
) -> tuple[Metric, str]:
    """A metric function and its name: one of `METRICS` built for ``batch``, or a callable as given."""
    if callable(metric):
        return metric, getattr(metric, "__name__", "custom")
    return make_metric(metric, batch, clean_logits, corrupt_logits), metric


def patch_task(
    lm: Model,
    batch: TaskBatch,
    *,
    target: str = "head_out",
    method: str = "activation",
    metric: Union[str, Metric] = "score",
    by_pos: Optional[bool] = None,
    layers: Optional[Sequence[int]] = None,
    batch_rows: Optional[int] = None,
    compare: bool = False,
    progress: bool = True,
    done: Optional[Mapping[Patch, float]] = None,
    on_pass: Optional[OnPass] = None,
    store: Optional[Store] = None,
) -> PatchResult:
    """Patch one target of a task batch (any `TaskBatch`, e.g. from `task_from_prompts`).

    Args:
        lm: the model.
        batch: the task.
        target: what is patched (see `PatchConfig`).
        method: activation or attribution patching (see `PatchConfig`).
        by_pos: patch each position separately (see `PatchConfig`).
        layers: the layers patched (see `PatchConfig`).
        batch_rows: rows (copies x prompts) per forward pass (see `PatchConfig`).
        compare: with attribution, also run activation patching (see `PatchConfig`).
        metric: a name of `METRICS` or a callable ``logits [batch, 1, vocab] -> [batch]`` (the
            logits at the answer position; one value per prompt).
        progress: show a progress bar over patches.
        done: values of patches finished by an earlier run, to resume (see `activation_patching`).
        on_pass: called after each forward pass with its patches and values, to store them
            (see `activation_patching`).
        store: the run's `Store` (progress bar, the passes' map over the ranks).

    Returns:
        A `PatchResult` (with the task's `Baseline`); with ``method="attribution", compare=True``
        it carries the activation result (``.activation``) and their correlation.
    """
    if method not in METHODS:
        raise InterpError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    site, index, axes, shape, head_axis = target_index(lm.arch, target, batch.n_pos, by_pos=by_pos, layers=layers)
    check_pair(batch.clean, batch.corrupt)
    base, clean_logits, corrupt_logits = task_baseline(lm, batch)
    fn, metric_name = resolve_metric(metric, batch, clean_logits, corrupt_logits)
    m_clean = float(evaluate_metric(fn, clean_logits, batch.n).double().mean())  # a bad metric fails here
    m_corrupt = float(evaluate_metric(fn, corrupt_logits, batch.n).double().mean())
    del clean_logits, corrupt_logits
    common = dict(
        task=batch.task, target=target, metric=metric_name, axes=axes, baseline=base,
        pos_labels=batch.pos_labels if "pos" in axes else (), model=lm.name, head_axis=head_axis,
        metric_clean=m_clean, metric_corrupt=m_corrupt,
    )  # fmt: skip
    act_result = None
    if method == "activation" or compare:
        values = activation_patching(
            lm, batch.clean, batch.corrupt, site, index, fn, batch_rows=batch_rows, progress=progress,
            done=done, on_pass=on_pass, store=store,
        )  # fmt: skip
        act_result = PatchResult(method="activation", scores=dense_scores(index, values.values, axes, shape), **common)
        if method == "activation":
            return act_result
    estimate = attribution_patching(lm, batch.clean, batch.corrupt, site, index, fn).values
    if act_result is None:
        return PatchResult(method="attribution", scores=dense_scores(index, estimate, axes, shape), **common)
    # compare the estimate with the activation effect M(patched) - M(corrupt)
    effect = replace(act_result, scores=act_result.scores - m_corrupt)
    attr = PatchResult(
        method="attribution", scores=dense_scores(index, estimate, axes, shape), activation=act_result, **common
    )
    return replace(attr, correlation=method_correlation(attr, effect))


def task_for(lm: Model, config: PatchConfig) -> TaskBatch:
    """The task ``config`` describes: a generated task, or the pairs file of task "pairs".

    Raises:
        InterpError: a model without tokenizer, words that are not single tokens, a bad pairs
            file (the message names the line).
    """
    if lm.tokenizer is None:
        raise InterpError(
            "this model has no tokenizer: the tasks are built from text; load the model with its tokenizer"
        )
    if config.task == "pairs":
        return task_from_jsonl(lm.tokenizer, config.pairs, bos=lm.bos_id)
    return make_task(lm.tokenizer, config.task, n=config.n, seed=config.seed, bos=lm.bos_id)


def _log_hooks(log: Any) -> tuple[dict[Patch, float], OnPass]:
    """Finished patches from a pass log (one record per forward pass) and a callback that appends."""
    done: dict[Patch, float] = {}
    for record in log:
        for patch, value in zip(record["patches"], record["values"]):
            done[tuple(int(x) for x in patch)] = float(value)

    def on_pass(patches: list[Patch], values: list[float]) -> None:
        log.add(f"pass-{len(log):06d}", {"patches": [list(p) for p in patches], "values": values})

    return done, on_pass


def log_settings(lm: Model, config: PatchConfig, notes: Mapping[str, Any]) -> dict:
    """What the patch values depend on: a re-run with other settings (or an edited pairs file, or
    another model backend) is refused rather than mixed with the logged passes."""
    skip = ("batch_rows", "pairs", "position_map", "min_clean_accuracy", "min_logit_diff")
    return {
        "model": lm.name,
        "backend": lm.backend,
        **{k: v for k, v in config.settings().items() if k not in skip},
        **notes,
    }


def run(lm: Model, config: PatchConfig = PatchConfig(), store: Optional[Store] = None) -> PatchResult:
    """Build the task from ``config``, measure its baseline, and patch (what every command runs).

    Args:
        lm: the model (with its tokenizer).
        config: `PatchConfig`.
        store: where activation patches are logged pass by pass (``patch_log.jsonl``, one part
            per rank) and resumed from: patches an interrupted run finished are not run again
            (`Store`; None keeps nothing). Launched on several ranks, each runs its share of
            the passes and every rank returns the whole result.

    Returns:
        A `PatchResult`; with ``compare`` it carries the activation result, with
        ``position_map`` the resid_pre x position result by attribution patching.

    Raises:
        InterpError: a model without tokenizer, layers out of range, words that are not single
            tokens, a bad pairs file.
    """
    from rich.console import Console

    store = store or Store()
    batch = task_for(lm, config)
    if config.pairs is not None:
        store.note(pairs_sha256=pairs_digest(config.pairs))
    log = store.log(log_settings(lm, config, store.notes), LOG_NAME, parted=True)
    done, on_pass = _log_hooks(log) if log is not None else (None, None)
    if done:
        Console(stderr=True).print(f"resuming: {len(done)} patches already done in {store.folder}")
    result = patch_task(
        lm, batch, target=config.target, method=config.method, metric=config.metric, by_pos=config.by_pos,
        layers=config.layers, batch_rows=config.batch_rows, compare=config.compare, done=done, on_pass=on_pass,
        store=store,
    )  # fmt: skip
    if config.position_map:
        # the layer x position map of the residual stream by attribution patching: one forward and one
        # backward pass, where activation patching would need layers x positions patched runs
        resid = patch_task(
            lm, batch, target="resid_pre", method="attribution", metric=config.metric, by_pos=True, layers=config.layers
        )
        result = replace(result, position_map=resid)
    checks = baseline_checks(result.baseline, config.min_clean_accuracy, config.min_logit_diff)
    return replace(result, checks=checks, prompts=tuple(batch.clean_text))

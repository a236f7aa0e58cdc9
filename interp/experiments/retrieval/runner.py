"""The retrieval experiment's runner: the needle grid built, traced, scored, then checked causally.

`run` builds the needle grid (`interp.datasets.needles`) with the model's tokenizer and chat
template, traces every sample (the scored rows and their top-1 key positions, from
`interp.experiments.retrieval.traces`, over a shared-prefix walk by default), scores each trace
(`interp.analyses.retrieval.scores`) and combines the grid (`interp.analyses.retrieval`); then
the causal check re-answers every sample with the top-K and with random-K heads made uniform.
Needle samples are the units of work of the scoring, (condition, sample) those of the check:
shared over ranks in contiguous blocks (samples that share a prefix stay on one rank) and
resumed from ``samples.jsonl`` and ``masking-<hash>.jsonl``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

from interp.analyses.retrieval import (
    RetrievalConfig,
    RetrievalResult,
    combine,
    masking_conditions,
    masking_result,
    sample_record,
)
from interp.datasets.needles import NeedleSample
from interp.digest import digest
from interp.experiments._base import Store
from interp.experiments._needles import answer_recall, needle_recall, prepare_samples, teacher_answers
from interp.experiments.retrieval.traces import (
    decode_answers,
    decode_trace,
    decode_traces,
    teacher_trace,
    teacher_traces,
)
from interp.models import Model

__all__ = ["run"]


def _shares_prefix(lm: Model, config: RetrievalConfig) -> bool:
    """Whether traces and masked recalls go through the shared-prefix walk."""
    return config.share_prefix and lm.reuses_prefixes


def _trace_all(lm: Model, todo: Sequence[NeedleSample], config: RetrievalConfig, finish: Callable) -> None:
    """Trace every sample of ``todo``; ``finish(sample, trace)`` as each one completes."""
    if _shares_prefix(lm, config) and todo:
        done = lambda i, t: finish(todo[i], t)  # noqa: E731
        if config.mode == "teacher":
            teacher_traces(lm, todo, backend=config.backend, batch_size=config.batch_for(lm.device), on_trace=done)
        else:
            decode_traces(lm, todo, max_new_tokens=config.max_new_tokens, backend=config.backend, on_trace=done)
        return
    for sample in todo:
        if config.mode == "teacher":
            finish(sample, teacher_trace(lm, sample, backend=config.backend))
        else:
            finish(sample, decode_trace(lm, sample, max_new_tokens=config.max_new_tokens, backend=config.backend))


def _recall_all(
    lm: Model, todo: Sequence[NeedleSample], config: RetrievalConfig, edits: Sequence, finish: Callable
) -> None:
    """Needle recall of every sample of ``todo`` under ``edits``; ``finish(sample, recall, text)``."""
    if _shares_prefix(lm, config) and todo:
        done = lambda i, ids: finish(todo[i], *answer_recall(lm, ids, todo[i]))  # noqa: E731
        if config.mode == "teacher":
            teacher_answers(lm, todo, edits=edits, batch_size=config.batch_for(lm.device), on_answer=done)
        else:
            decode_answers(lm, todo, max_new_tokens=config.max_new_tokens, edits=edits, on_answer=done)
        return
    for sample in todo:
        finish(sample, *needle_recall(lm, sample, config, edits))


def run(lm: Model, config: RetrievalConfig = RetrievalConfig(), store: Optional[Store] = None) -> RetrievalResult:
    """Score every head for retrieval on the needle grid, and run the causal check.

    Args:
        lm: the model (with a tokenizer).
        config: what to run (`RetrievalConfig`).
        store: where finished samples are logged as they complete (``samples.jsonl``; masking
            runs in ``masking-<hash>.jsonl``) and resumed from (`Store`; None keeps nothing).
            Launched on several ranks, each traces its block and every rank returns the whole result.

    Raises:
        InterpError: bad input (checked before any model work or write), or a folder holding a
            run with other settings.
    """
    from interp.distributed import finished
    from interp.hooks import uniform_attention

    store = store or Store()
    arch = lm.arch
    if config.mask:
        config.mask_sizes(arch.n_layers * arch.n_heads)  # K must fit the model: fail before any work
    samples, provenance = prepare_samples(lm, config)
    store.note(**provenance)
    by_key = {s.key: s for s in samples}
    n_computed = len(samples) - len(finished(store.log(provenance), list(by_key)))  # by all ranks together

    t0 = time.perf_counter()
    with store.bar(total=len(samples), desc=f"retrieval ({config.mode})", unit="sample") as bar:  # rank 0's
        last = [time.perf_counter()]

        def trace_many(keys: list[str], done: Callable) -> None:  # this rank's unfinished samples
            def finish(sample: NeedleSample, trace) -> None:
                now = time.perf_counter()
                done(
                    sample.key,
                    sample_record(sample, trace, answer_recall(lm, trace.answer_ids(), sample)[1], now - last[0]),
                )
                last[0] = now
                bar.update(1)

            _trace_all(lm, [by_key[k] for k in keys], config, finish)

        # contiguous blocks keep samples that share a prefix on one rank
        records = store.map(
            list(by_key),
            compute_many=trace_many,
            settings=provenance,
            what="needle samples",
            progress=False,
            contiguous=True,
        )
        bar.update(len(samples) - bar.n)
    scoring_seconds = time.perf_counter() - t0
    result = combine(lm.name, config, samples, records, (arch.n_layers, arch.n_heads))

    t1 = time.perf_counter()
    if config.mask and result.n_samples > 0:
        conditions = masking_conditions(result.scores, config)
        mask_settings = {**provenance, "conditions": [[c, s, [list(h) for h in heads]] for c, s, heads in conditions]}
        recalls: dict[tuple[str, Optional[int]], dict[str, float]] = {}
        with store.bar(total=len(conditions) * len(samples), desc="masking check", unit="sample") as bar:
            for name, seed, heads in conditions:
                edits = [uniform_attention(layer, head) for layer, head in heads]
                prefix = f"{name}{'' if seed is None else seed}|"

                def recall_many(
                    keys: list[str], done: Callable, edits=edits, prefix=prefix
                ) -> None:  # this rank's share
                    def finish(sample: NeedleSample, recall: float, text: str) -> None:
                        done(prefix + sample.key, {"recall": recall, "answer": text})
                        bar.update(1)

                    _recall_all(lm, [by_key[k[len(prefix) :]] for k in keys], config, edits, finish)

                recs = store.map(
                    [prefix + s.key for s in samples], compute_many=recall_many, settings=mask_settings,
                    log=f"masking-{digest(mask_settings)}.jsonl", what="masked samples", progress=False, contiguous=True,
                )  # fmt: skip
                recalls[(name, seed)] = {s.key: float(recs[prefix + s.key]["recall"]) for s in samples}
        result = replace(result, masking=masking_result(result, conditions, recalls))
    timings = {
        "scoring_seconds": round(scoring_seconds, 2),
        "masking_seconds": round(time.perf_counter() - t1, 2),
        "samples_computed": n_computed,
        "samples_resumed": len(samples) - n_computed,
    }
    return replace(result, timings=timings)

"""Circuit patching: activation, path and attribution patching, circuits and their overlap.

Definitions follow METRICS.md ("Circuit patching"): the logit difference LD = logit(correct) -
logit(wrong) at the last position; the normalised score (LD_patched - LD_corrupt) /
(LD_clean - LD_corrupt) is 1 when a component restores the clean behaviour and 0 when it does
nothing.

**Activation patching** (Wang et al. 2022; Meng et al. 2022) is one generic function,
`activation_patching`: run the corrupted prompts, replace one component's activation by its
clean value, measure the metric. It is batched: a forward pass holds ``c`` copies of the ``n``
corrupted prompts and copy ``j`` gets patch ``j``, applied by one `interp.hooks.Edit` per layer
that swaps the masked entries of the site's canonical tensor (z and q ``[batch, head, pos,
d_head]``; k and v ``[batch, kv_head, pos, d_head]``, so k/v patches are per kv head; residual
sites ``[batch, pos, d_model]``). Thin setters (`target_index`) turn a target name into the list
of (layer, head, pos) patches. Three more savings, all exact: the unembedding runs at the answer
position only; a patch whose clean and corrupted values are equal in every prompt (a position
where the prompts agree, below the first layer that sees a difference) is not run, its value
being the unpatched metric; and patches are taken in order of position, so that a pass whose
earliest patch is at position p starts from the corrupted run's cached keys and values of
positions < p (which no patch can change, attention being causal) and recomputes only
positions >= p (HF backend).
See ``benchmarks/patching.py`` for the speed against serial patching.

**Path patching** (Wang et al. 2022, section 3.1) sends a sender head's clean-minus-corrupt
contribution only along the path into chosen receivers' q, k or v: run 1 is the corrupted run
with every head's z frozen at its corrupted value except the senders' (set to clean); it
captures the receivers' inputs, which run 2 (a plain corrupted run) then receives. MLPs are
recomputed in run 1 by default, as in Wang et al. (paths through MLPs count as part of the
path); ``freeze_mlps=True`` freezes them too, leaving only the direct path. Receivers' q/k/v
are post-RoPE, exactly what attention reads, so patching them is exact.

**Attribution patching** (Nanda 2023; Syed et al. 2023) estimates every activation patch at
once to first order, (a_clean - a_corrupt) . dM/da, from one forward and one backward pass on
the corrupted prompts. The gradient is read by adding a zero tensor that requires grad to each
site (an Edit returning ``x + delta``), so no hook needs ``retain_grad``.

**Circuits**: the top heads by |score|; the overlap of two tasks' circuits is the share of
top-K heads common to both (Merullo et al. 2023 report about 78% between IOI and Colored
Objects on GPT-2 Medium).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from interp.analyses.tasks import TaskBatch, make_task, task_from_jsonl
from interp.errors import InterpError
from interp.hooks import Edit, capture, intervene, start_at_layer

__all__ = [
    "TARGETS",
    "METRICS",
    "METHODS",
    "PatchConfig",
    "Baseline",
    "PatchResult",
    "CircuitOverlap",
    "logit_diff",
    "make_metric",
    "task_baseline",
    "target_index",
    "activation_patching",
    "attribution_patching",
    "path_patching",
    "patch_task",
    "path_patch_task",
    "run_patching",
    "config_batch",
    "top_heads",
    "head_scores",
    "circuit_overlap",
    "method_correlation",
]

# target name -> (canonical site, head axis: "head" (query heads), "kv_head", or None)
TARGETS: dict[str, tuple[str, Optional[str]]] = {
    "head_out": ("z", "head"),
    "q": ("q", "head"),
    "k": ("k", "kv_head"),
    "v": ("v", "kv_head"),
    "resid_pre": ("resid_pre", None),
    "attn_out": ("attn_out", None),
    "mlp_out": ("mlp_out", None),
}
METRICS = ("score", "logit_diff", "kl")
METHODS = ("activation", "attribution")

Metric = Callable[[torch.Tensor], torch.Tensor]  # answer-position logits [batch, 1, vocab] -> [batch]
Patch = tuple[int, int, int]  # (layer, head, pos), -1 = all / not applicable
OnPass = Callable[[list[Patch], list[float]], None]  # called after each forward pass with its patches' values
_LOGIT_BUDGET_BYTES = 2**28  # default rows per forward: one pass's activations stay near 256 MiB


@dataclass(frozen=True)
class PatchConfig:
    """What `run_patching` does. Defaults give the IOI head-output sweep of Wang et al."""

    task: str = "ioi"  # "ioi", "colored-objects", or "pairs" (your own prompt pairs, from ``pairs``)
    n: int = 16  # prompts (the metric is averaged over them); not used with task "pairs"
    seed: int = 0  # task generator seed; not used with task "pairs"
    pairs: Optional[str] = None  # task "pairs": a JSONL file, one {"clean", "corrupt", "correct", "wrong"} per line
    target: str = "head_out"  # head_out (z) | q | k | v (per kv head) | resid_pre | attn_out | mlp_out
    method: str = "activation"  # activation | attribution
    metric: str = "score"  # score (normalised) | logit_diff | kl (KL(clean || patched) at the answer)
    by_pos: Optional[bool] = None  # None: by position for resid_pre/attn_out/mlp_out, all positions for heads
    layers: Optional[tuple[int, ...]] = None  # layers to patch; None = all
    batch_rows: Optional[int] = None  # rows (copies x prompts) per forward; None = fit logits in 256 MiB
    compare: bool = False  # with method="attribution": also run activation patching, report the correlation
    progress: bool = True  # progress bar over patches

    def validate(self) -> None:
        """Raise InterpError on a bad setting (before any model work)."""
        if self.task == "pairs" and self.pairs is None:
            raise InterpError('task "pairs" needs a pairs file: set pairs to a JSONL file of {"clean", "corrupt", "correct", "wrong"} lines')
        if self.pairs is not None and self.task != "pairs":
            raise InterpError(f"a pairs file was given with task '{self.task}': set task to \"pairs\" to run it, or drop the file")
        if self.target not in TARGETS:
            raise InterpError(f"unknown target '{self.target}': use one of {', '.join(TARGETS)}")
        if self.method not in METHODS:
            raise InterpError(f"unknown method '{self.method}': use one of {', '.join(METHODS)}")
        if self.metric not in METRICS:
            raise InterpError(f"unknown metric '{self.metric}': use one of {', '.join(METRICS)} (or pass a callable to patch_task)")
        if self.task != "pairs" and self.n < 1:
            raise InterpError(f"n = {self.n}: use at least one prompt")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise InterpError(f"batch_rows = {self.batch_rows}: use a positive number of rows per forward")


@dataclass(frozen=True)
class Baseline:
    """The task before patching (METRICS.md: accuracy and logit differences).

    Attributes:
        n: prompts.
        clean_accuracy: share of clean prompts whose correct answer outscores the wrong one (LD > 0).
        clean_top1: share of clean prompts whose correct answer is the top next token.
        corrupt_accuracy: LD > 0 share on the corrupted prompts.
        clean_logit_diff, corrupt_logit_diff: mean LD over prompts.
    """

    n: int
    clean_accuracy: float
    clean_top1: float
    corrupt_accuracy: float
    clean_logit_diff: float
    corrupt_logit_diff: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class PatchResult:
    """Scores of one patching sweep.

    Attributes:
        task, target, method, metric: what was run (target "path:q" etc. for path patching).
        axes: names of the axes of ``scores``: a prefix of ("layer", "head", "pos"), or
            ("layer", "pos"), e.g. ("layer", "head") for head output over all positions.
        scores: float array over ``axes`` (n_layers x n_heads [x n_pos]); NaN where nothing was
            patched. Activation patching: the metric averaged over prompts. Attribution: the
            first-order estimate of (metric patched - metric corrupted).
        baseline: the task before patching.
        pos_labels: one label per position (empty when there is no position axis).
        model: model name.
        correlation: Pearson r between attribution and activation patching (when both ran).
        head_axis: "head" or "kv_head" (k/v patches are per kv head); None without heads.
    """

    task: str
    target: str
    method: str
    metric: str
    axes: tuple[str, ...]
    scores: np.ndarray
    baseline: Optional[Baseline] = None
    pos_labels: tuple[str, ...] = ()
    model: str = ""
    correlation: Optional[float] = None
    head_axis: Optional[str] = None
    activation: Optional["PatchResult"] = field(default=None, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])

    def to_dataframe(self):
        """Long table: layer, head, pos, pos_label, score (head/pos <NA> where they do not apply)."""
        import pandas as pd

        grid = np.indices(self.scores.shape).reshape(len(self.axes), -1).T
        values = self.scores.reshape(-1)
        keep = np.isfinite(values)
        cols = {name: grid[keep, i] for i, name in enumerate(self.axes)}
        n = int(keep.sum())
        df = pd.DataFrame(
            {
                "layer": cols["layer"],
                "head": pd.array(cols["head"] if "head" in cols else [None] * n, dtype="Int64"),
                "pos": pd.array(cols["pos"] if "pos" in cols else [None] * n, dtype="Int64"),
            }
        )
        if "pos" in cols and self.pos_labels:
            df["pos_label"] = [self.pos_labels[p] for p in cols["pos"]]
        else:
            df["pos_label"] = ""
        df["score"] = values[keep]
        return df

    def meta(self) -> dict:
        """Everything but the scores, for run.json (inverse: `from_dataframe`)."""
        return {
            "task": self.task,
            "target": self.target,
            "method": self.method,
            "metric": self.metric,
            "axes": list(self.axes),
            "shape": list(self.scores.shape),
            "head_axis": self.head_axis,
            "pos_labels": list(self.pos_labels),
            "model": self.model,
            "correlation_attribution_activation": self.correlation,
            "baseline": self.baseline.as_dict() if self.baseline else None,
        }

    @classmethod
    def from_dataframe(cls, df, meta: dict) -> "PatchResult":
        """Rebuild a result from its `to_dataframe()` table and `meta()` (e.g. a run folder)."""
        try:
            axes = tuple(meta["axes"])
            scores = np.full(tuple(meta["shape"]), np.nan)
            idx = tuple(df[a].astype(int).to_numpy() for a in axes)
            scores[idx] = df["score"].astype(float).to_numpy()
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise InterpError(
                f"patch table and run.json do not match ({type(err).__name__}: {err}): "
                "pass a folder written by `interp patch`"
            ) from err
        base = meta.get("baseline")
        return cls(
            task=meta.get("task", ""),
            target=meta.get("target", ""),
            method=meta.get("method", ""),
            metric=meta.get("metric", ""),
            axes=axes,
            scores=scores,
            baseline=Baseline(**base) if base else None,
            pos_labels=tuple(meta.get("pos_labels") or ()),
            model=meta.get("model", ""),
            correlation=meta.get("correlation_attribution_activation"),
            head_axis=meta.get("head_axis"),
        )


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def logit_diff(logits: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """LD per prompt at the last position.

    Args:
        logits: [batch, pos, vocab] (or [batch, vocab] at the answer position).
        correct, wrong: LongTensor [batch] answer tokens.

    Returns:
        [batch] logit(correct) - logit(wrong).
    """
    last = logits[:, -1] if logits.dim() == 3 else logits
    rows = torch.arange(last.shape[0], device=last.device)
    return last[rows, correct.to(last.device)] - last[rows, wrong.to(last.device)]


def make_metric(name: str, batch: TaskBatch, clean_logits: torch.Tensor, corrupt_logits: torch.Tensor) -> Metric:
    """A metric ``logits [batch, pos, vocab] -> [batch]`` for ``batch`` (one value per prompt).

    Metrics read the last position only (the sweeps pass ``[batch, 1, vocab]``).

    - "logit_diff": LD per prompt.
    - "score": (LD_i - mean LD_corrupt) / (mean LD_clean - mean LD_corrupt); its mean over
      prompts is the normalised score of the mean LD (linear, so averaging commutes).
    - "kl": KL(p_clean || p_patched) of the next-token distribution at the last position.

    Raises:
        InterpError: unknown name, or a "score" whose clean and corrupted means coincide.
    """
    correct, wrong = batch.correct, batch.wrong
    if name == "logit_diff":
        return lambda logits: logit_diff(logits, correct, wrong)
    if name == "score":
        ld_clean = float(logit_diff(clean_logits, correct, wrong).mean())
        ld_corrupt = float(logit_diff(corrupt_logits, correct, wrong).mean())
        gap = ld_clean - ld_corrupt
        if abs(gap) < 1e-6:
            raise InterpError(
                f"clean and corrupted prompts have the same mean logit difference ({ld_clean:.4g}): the normalised "
                "score is undefined; use metric 'logit_diff' or 'kl', or a corruption that changes the answer"
            )
        return lambda logits: (logit_diff(logits, correct, wrong) - ld_corrupt) / gap
    if name == "kl":
        log_p_clean = torch.log_softmax(clean_logits[:, -1].double(), -1)

        def kl(logits: torch.Tensor) -> torch.Tensor:
            log_q = torch.log_softmax(logits[:, -1].double(), -1)
            return (log_p_clean.exp() * (log_p_clean - log_q.to(log_p_clean.device))).sum(-1).to(logits.dtype)

        return kl
    raise InterpError(f"unknown metric '{name}': use one of {', '.join(METRICS)} or pass a callable")


def _evaluate(metric: Metric, logits: torch.Tensor, n: int) -> torch.Tensor:
    """Per-prompt metric values [n], checked to be one finite scalar per prompt."""
    out = metric(logits)
    out = torch.as_tensor(out)
    if out.shape != (n,):
        raise InterpError(
            f"the patching metric returned shape {tuple(out.shape)} for {n} prompts: it must return one scalar per "
            f"prompt (a tensor of shape [{n}]); reduce over positions and vocabulary inside the metric, not over prompts"
        )
    return out


def task_baseline(lm, batch: TaskBatch) -> tuple[Baseline, torch.Tensor, torch.Tensor]:
    """Clean and corrupted forward passes: the task's accuracy and logit differences.

    Returns:
        (Baseline, clean logits [batch, 1, vocab], corrupted logits [batch, 1, vocab]) at the
        answer position.
    """
    clean_logits = _answer_logits(lm, batch.clean.to(lm.device))
    corrupt_logits = _answer_logits(lm, batch.corrupt.to(lm.device))
    ld_c = logit_diff(clean_logits, batch.correct, batch.wrong)
    ld_x = logit_diff(corrupt_logits, batch.correct, batch.wrong)
    top1 = clean_logits[:, -1].argmax(-1).cpu() == batch.correct.cpu()
    base = Baseline(
        n=batch.n,
        clean_accuracy=float((ld_c > 0).float().mean()),
        clean_top1=float(top1.float().mean()),
        corrupt_accuracy=float((ld_x > 0).float().mean()),
        clean_logit_diff=float(ld_c.mean()),
        corrupt_logit_diff=float(ld_x.mean()),
    )
    return base, clean_logits, corrupt_logits


# --------------------------------------------------------------------------------------------
# Setters: target name -> patches
# --------------------------------------------------------------------------------------------


def target_index(
    lm, target: str, n_pos: int, *, by_pos: Optional[bool] = None, layers: Optional[Sequence[int]] = None
) -> tuple[str, torch.Tensor, tuple[str, ...], tuple[int, ...], Optional[str]]:
    """The patches of a target: which site, and one (layer, head, pos) row per patch.

    Args:
        lm: the model (for its layer and head counts).
        target: a key of `TARGETS`.
        n_pos: tokens per prompt.
        by_pos: patch each position separately (default: yes for residual sites, no for heads).
        layers: layers to patch (None = all).

    Returns:
        (site, index LongTensor [n_patches, 3] with -1 = "all" / not applicable, axes, shape of
        the dense score array, head axis name).

    Raises:
        InterpError: unknown target or layer out of range.
    """
    if target not in TARGETS:
        raise InterpError(f"unknown target '{target}': use one of {', '.join(TARGETS)}")
    site, head_axis = TARGETS[target]
    if by_pos is None:
        by_pos = head_axis is None
    chosen = list(range(lm.arch.n_layers)) if layers is None else sorted({lm.arch.check_layer(int(x)) for x in layers})
    if not chosen:
        raise InterpError("no layers chosen: pass at least one layer (or None for all)")
    n_heads = {"head": lm.arch.n_heads, "kv_head": lm.arch.n_kv_heads, None: 1}[head_axis]
    heads = range(n_heads) if head_axis else [-1]
    positions = range(n_pos) if by_pos else [-1]
    rows = [(layer, h, p) for layer in chosen for h in heads for p in positions]
    axes: tuple[str, ...] = ("layer",) + (("head",) if head_axis else ()) + (("pos",) if by_pos else ())
    shape = (lm.arch.n_layers,) + ((n_heads,) if head_axis else ()) + ((n_pos,) if by_pos else ())
    return site, torch.tensor(rows, dtype=torch.long), axes, shape, head_axis


def _dense(index: torch.Tensor, values: torch.Tensor, axes: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Scatter per-patch values into a NaN-filled array over ``axes``."""
    out = np.full(shape, np.nan)
    cols = {"layer": 0, "head": 1, "pos": 2}
    idx = tuple(index[:, cols[a]].numpy() for a in axes)
    out[idx] = values.detach().double().cpu().numpy()
    return out


def _mask(index_rows: Sequence[tuple[int, int, int, int]], shape: tuple[int, ...], n: int, has_head: bool) -> torch.Tensor:
    """Bool mask over a batched site (copies x prompts first) marking each copy's patched entries.

    ``index_rows`` holds (copy j, layer, head, pos); only rows of the layer being built are passed.
    """
    mask = torch.zeros(shape[:-1], dtype=torch.bool)
    for j, _layer, head, pos in index_rows:
        rows = slice(j * n, (j + 1) * n)
        p = slice(None) if pos < 0 else pos
        if has_head:
            mask[rows, slice(None) if head < 0 else head, p] = True
        else:
            mask[rows, p] = True
    return mask


def _default_rows(lm, n: int, n_pos: int) -> int:
    """Rows per forward so that one pass's activations stay within the budget (logits at one position)."""
    per_row = 4 * (lm.vocab_size + 16 * n_pos * lm.arch.d_model)
    return max(n, min(4096, _LOGIT_BUDGET_BYTES // per_row))


def _answer_logits(lm, ids: torch.Tensor, *, grad: bool = False, past=None) -> torch.Tensor:
    """Logits [batch, 1, vocab] at the last (answer) position: every metric here reads only
    that position (`LoadedModel.logits_tail`; ``past``: a prefix KV cache, see `_prefix_cache`)."""
    return lm.logits_tail(ids, 1, past=past, grad=grad)


def _prefix_cache(lm, kv: dict[int, tuple[torch.Tensor, torch.Tensor]], start: int, copies: int):
    """A ``DynamicCache`` with the corrupted run's keys/values of positions ``< start``, tiled ``copies`` times.

    Positions before the earliest patched position are identical in every patched run (attention
    is causal), so a by-position patch at position p needs only positions >= p recomputed; the
    cache holds the rest. Keys are post-RoPE as captured, which is what HF caches store.
    """
    cache = lm.new_cache()  # keeps every key: exact also on sliding-window layers, under any capture
    for layer in range(lm.arch.n_layers):
        k, v = kv[layer]
        reps = (copies,) + (1,) * (k.dim() - 1)
        cache.update(k[..., :start, :].repeat(*reps), v[..., :start, :].repeat(*reps), layer)
    return cache


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="patch", disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------------
# Activation patching (the generic function)
# --------------------------------------------------------------------------------------------


def activation_patching(
    lm,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    site: str,
    index: torch.Tensor,
    metric: Metric,
    *,
    batch_rows: Optional[int] = None,
    progress: bool = True,
    done: Optional[Mapping[Patch, float]] = None,
    on_pass: Optional[OnPass] = None,
) -> torch.Tensor:
    """Patch clean activations into the corrupted run, many patches per forward pass.

    Args:
        lm: a `LoadedModel` (HF or TL backend).
        clean, corrupt: LongTensor [batch, pos], same shape.
        site: canonical site: z, q, k, v (head sites; k/v index kv heads), resid_pre,
            attn_out or mlp_out.
        index: LongTensor [n_patches, 3] of (layer, head, pos); head -1 = all heads (and must
            be -1 for residual sites), pos -1 = all positions.
        metric: ``logits -> [batch]``, one scalar per prompt; it receives the logits at the
            answer (last) position, ``[batch, 1, vocab]``, so ``logits[:, -1]`` works as in
            transformer-lens metrics.
        batch_rows: rows (copies x prompts) per forward; default keeps one pass near 256 MiB.
        progress: show a progress bar.
        done: values of patches (layer, head, pos) finished by an earlier, interrupted run of
            the same sweep: they are not run again (resume; see `run_patching`'s ``log``).
        on_pass: called after each forward pass with its patches and their values (to store
            them as they finish).

    Returns:
        [n_patches] the metric after each patch, averaged over prompts.

    Raises:
        InterpError: mismatched clean/corrupted shapes, a head given for a residual site, or a
            metric that does not return one scalar per prompt.
    """
    _check_pair(clean, corrupt)
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1, 3).cpu()
    has_head = site in ("q", "k", "v", "z")
    if not has_head and bool((index[:, 1] >= 0).any()):
        raise InterpError(f"site '{site}' has no head axis: give head -1 for every patch")
    n, n_pos = clean.shape
    clean, corrupt = clean.to(lm.device), corrupt.to(lm.device)
    layers = sorted(set(index[:, 0].tolist()))
    with capture(lm, layers=layers, keep=(site,)) as cap:
        _answer_logits(lm, clean)
    clean_act = {layer: cap[site, layer] for layer in layers}
    # One corrupted pass gives (a) the site's corrupted values, hence each patch's first position
    # where the values it copies differ from the corrupted ones in some prompt: a patch with none
    # changes nothing, so its value is the unpatched metric and it is not run; and (b), on the HF
    # backend, every layer's keys and values: patches are run in order of that first position,
    # and a pass whose earliest one is p reuses them for positions < p (equal in the patched
    # and corrupted runs, attention being causal) and recomputes only positions >= p. Before
    # the first token where clean and corrupted prompts differ, every activation agrees.
    first_token = int((clean != corrupt).any(0).float().argmax()) if bool((clean != corrupt).any()) else n_pos
    reuse = lm.reuses_prefixes and (int(index[:, 2].max()) > 0 or first_token > 0) and _kv_fits(lm, corrupt)
    # (c) On the HF backend, the residual stream entering the lowest patched layer: a pass
    # whose patches all sit at layer L or above starts there (layers < L compute the same
    # values in every patched run as in the corrupted one).
    skip = lm.reuses_prefixes and max(layers) > 0 and _kv_fits(lm, corrupt)
    keep = (site,) + (("k", "v") if reuse else ()) + (("resid_pre",) if skip else ())
    with capture(lm, layers=None if reuse else layers, keep=tuple(dict.fromkeys(keep))) as cap:
        base_logits = _answer_logits(lm, corrupt)
    corrupt_act = {layer: cap[site, layer] for layer in layers}
    kv = {layer: (cap["k", layer], cap["v", layer]) for layer in range(lm.arch.n_layers)} if reuse else None
    resid = {layer: cap["resid_pre", layer] for layer in layers} if skip else None
    unpatched = _evaluate(metric, base_logits, n).double().mean()
    first = torch.tensor(
        [_first_difference(clean_act[la], corrupt_act[la], h, p, has_head) for la, h, p in index.tolist()], dtype=torch.long
    )
    noop = first >= n_pos
    per_pass = max(1, (batch_rows or _default_rows(lm, n, n_pos)) // n)
    out = torch.full((len(index),), float(unpatched), dtype=torch.float64)
    if done:
        finished = torch.tensor([tuple(row) in done for row in index.tolist()], dtype=torch.bool)
        for i in torch.nonzero(finished & ~noop).flatten().tolist():
            out[i] = float(done[tuple(index[i].tolist())])
        noop = noop | finished
    todo = torch.nonzero(~noop).flatten()
    bar = _progress(len(index), f"patching {site}", progress)
    bar.update(len(index) - len(todo))
    from interp.distributed import map_units

    passes = _chunks(first[todo], per_pass, n, n_pos, reuse=reuse, layer=index[todo, 0] if resid is not None else None)

    def run_passes(keys, finished) -> None:  # this rank's share of the passes (interp.distributed)
        for key in keys:
            which = todo[passes[int(key.removeprefix("pass-"))]]
            chunk = index[which].tolist()
            c = len(chunk)
            start = int(first[which].min()) if kv is not None else 0
            # k and v span every key position (cached ones included); other sites only the new ones
            offset = 0 if site in ("k", "v") else start
            edits = []
            for layer in sorted({row[0] for row in chunk}):
                rows = [(j, la, h, p - offset if p >= 0 else p) for j, (la, h, p) in enumerate(chunk) if la == layer]
                act = clean_act[layer][..., offset:, :] if has_head else clean_act[layer][:, offset:]
                source = act.repeat(c, *([1] * (act.dim() - 1)))
                mask = _mask(rows, tuple(source.shape), n, has_head).to(act.device)
                edits.append(Edit(site, layer, _swap(mask, source)))
            past = _prefix_cache(lm, kv, start, c) if start > 0 else None
            low = min(row[0] for row in chunk)
            with contextlib.ExitStack() as stack:
                if resid is not None and low > 0:
                    stack.enter_context(start_at_layer(lm, low, resid[low][:, start:].repeat(c, 1, 1)))
                stack.enter_context(intervene(lm, edits))
                logits = _answer_logits(lm, corrupt[:, start:].repeat(c, 1), past=past)
            for j in range(c):
                out[which[j]] = _evaluate(metric, logits[j * n : (j + 1) * n], n).double().mean()
            del logits, past
            if on_pass is not None:
                on_pass([tuple(row) for row in chunk], out[which].tolist())
            finished(key, out[which].tolist())
            bar.update(c)

    try:  # the passes (and so every value) are those of a one-process run, shared over the ranks
        got = map_units([f"pass-{i}" for i in range(len(passes))], compute_many=run_passes, what="patch passes", progress=False, idle_ok=True)
    finally:
        bar.close()
    for key, values in got.items():
        out[todo[passes[int(key.removeprefix("pass-"))]]] = torch.tensor(values, dtype=torch.float64)
    return out


def _chunks(
    pos: torch.Tensor,
    per_pass: int,
    n: int,
    n_pos: int,
    *,
    reuse: bool,
    layer: Optional[torch.Tensor] = None,
    min_tokens: int = 96,
) -> list[torch.Tensor]:
    """Split patches into passes, in order of (first changed position, layer).

    A pass holds at most ``per_pass`` patches. With prefix reuse (``reuse``) a pass recomputes
    only the positions from its first patch on, and with ``layer`` (layer skipping) only the
    layers from its lowest patch on; so a pass also closes at a change of position or of layer
    once it holds ``min_tokens`` tokens of work (``n`` prompts times the positions from its
    first patch on): later passes then start later or higher, while passes much smaller than
    that would waste the batching. Without either, every pass is full.
    """
    layer = torch.zeros_like(pos) if layer is None else layer
    order = sorted(range(len(pos)), key=lambda i: (max(0, int(pos[i])), int(layer[i]), i))
    out, current = [], []
    for i in order:
        key = (max(0, int(pos[i])), int(layer[i]))
        if current:
            first, last = current[0], current[-1]
            start = max(0, int(pos[first]))
            changed = key != (max(0, int(pos[last])), int(layer[last]))
            enough = changed and len(current) * n * (n_pos - start) >= min_tokens
            if len(current) >= per_pass or ((reuse or bool(layer.any())) and enough):
                out.append(torch.tensor(current))
                current = []
        current.append(i)
    if current:
        out.append(torch.tensor(current))
    return out


def _kv_fits(lm, corrupt: torch.Tensor) -> bool:
    """Whether every layer's corrupted keys and values fit the memory budget (for prefix reuse)."""
    n, n_pos = corrupt.shape
    return 2 * 4 * n * n_pos * lm.arch.n_kv_heads * lm.arch.d_head * lm.arch.n_layers <= _LOGIT_BUDGET_BYTES


def _first_difference(clean: torch.Tensor, corrupt: torch.Tensor, head: int, pos: int, has_head: bool) -> int:
    """The first position where patch (head, pos) copies values that differ from the corrupted
    ones in some prompt; ``n_pos`` when it copies only equal values (a no-op).

    ``clean``/``corrupt`` are one layer's site, position on axis -2 ([batch, (kv_)head, pos,
    d_head] or [batch, pos, d_model]).
    """
    n_pos = clean.shape[-2]
    if has_head and head >= 0:
        clean, corrupt = clean[:, head], corrupt[:, head]
    if pos >= 0:
        return pos if not torch.equal(clean[..., pos, :], corrupt[..., pos, :]) else n_pos
    differs = (clean != corrupt).movedim(-2, 0).reshape(n_pos, -1).any(1)
    return int(differs.float().argmax()) if bool(differs.any()) else n_pos


def _swap(mask: torch.Tensor, source: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Edit function: entries under ``mask`` (all of the last axis) come from ``source``."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.unsqueeze(-1), source.to(x.dtype), x)

    return fn


def _check_pair(clean: torch.Tensor, corrupt: torch.Tensor) -> None:
    if clean.dim() != 2 or clean.shape != corrupt.shape:
        raise InterpError(
            f"clean {tuple(clean.shape)} and corrupted {tuple(corrupt.shape)} token batches must both be [batch, pos] of "
            "the same shape: patching copies activations position by position, so each corrupted prompt must "
            "tokenize to the same length as its clean prompt (change only single-token words)"
        )


# --------------------------------------------------------------------------------------------
# Attribution patching
# --------------------------------------------------------------------------------------------


def attribution_patching(
    lm,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    site: str,
    index: torch.Tensor,
    metric: Metric,
) -> torch.Tensor:
    """First-order estimate of every patch in ``index`` from one forward and one backward pass.

    For a patch of entries a (a head, a position, or both) the estimate of
    M(patched) - M(corrupt) is sum over those entries of (a_clean - a_corrupt) * dM/da,
    with M the metric averaged over prompts, the gradient taken on the corrupted run
    (Nanda 2023, "Attribution patching").

    Args: as `activation_patching`.

    Returns:
        [n_patches] attribution estimates.
    """
    _check_pair(clean, corrupt)
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1, 3).cpu()
    has_head = site in ("q", "k", "v", "z")
    n = clean.shape[0]
    clean, corrupt = clean.to(lm.device), corrupt.to(lm.device)
    layers = sorted(set(index[:, 0].tolist()))
    with capture(lm, layers=layers, keep=(site,)) as cap:
        _answer_logits(lm, clean)
    clean_act = {layer: cap[site, layer] for layer in layers}
    corrupt_act: dict[int, torch.Tensor] = {}
    deltas: dict[int, torch.Tensor] = {}

    def probe(layer: int):
        def fn(x: torch.Tensor) -> torch.Tensor:
            corrupt_act[layer] = x.detach()
            deltas[layer] = torch.zeros_like(x, requires_grad=True)
            return x + deltas[layer]

        return fn

    with intervene(lm, [Edit(site, layer, probe(layer)) for layer in layers]):
        logits = _answer_logits(lm, corrupt, grad=True)
    value = _evaluate(metric, logits, n).mean()
    grads = torch.autograd.grad(value, [deltas[layer] for layer in layers], allow_unused=True)
    # per layer: (clean - corrupt) . grad summed over the feature axis and prompts -> [head, pos] or [pos]
    contrib = {}
    for layer, g in zip(layers, grads):
        g = torch.zeros_like(corrupt_act[layer]) if g is None else g
        contrib[layer] = ((clean_act[layer] - corrupt_act[layer]) * g).sum(dim=(0, -1)).detach().double().cpu()
    out = torch.empty(len(index), dtype=torch.float64)
    for i, (layer, head, pos) in enumerate(index.tolist()):
        a = contrib[layer]
        if has_head:
            a = a if head < 0 else a[head]
        out[i] = a.sum() if pos < 0 else a[..., pos].sum()
    return out


# --------------------------------------------------------------------------------------------
# Path patching
# --------------------------------------------------------------------------------------------


def path_patching(
    lm,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    senders: torch.Tensor,
    receivers: Sequence[tuple[int, int]],
    receiver_input: str,
    metric: Metric,
    *,
    freeze_mlps: bool = False,
    batch_rows: Optional[int] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Path patching sender head -> receivers' q, k or v (Wang et al. 2022), batched over senders.

    Run 1 (corrupted input): every head's z is frozen at its corrupted value except the sender's,
    which takes its clean value; MLPs are recomputed (or frozen with ``freeze_mlps``); the
    receivers' ``receiver_input`` is captured. Run 2 (corrupted input): only the receivers'
    inputs are replaced by the captured ones; the metric is measured. So the sender's
    clean-minus-corrupt contribution reaches the output only through the receivers' chosen input.

    Args:
        lm: a `LoadedModel`.
        clean, corrupt: LongTensor [batch, pos].
        senders: LongTensor [n_senders, 2] of (layer, head) query heads.
        receivers: (layer, head) pairs; head is a query head for "q" and a kv head for "k"/"v".
        receiver_input: "q", "k" or "v".
        metric: ``logits -> [batch]``.
        freeze_mlps: freeze MLP outputs at their corrupted values in run 1 (direct path only).
        batch_rows: rows per forward (see `activation_patching`).

    Returns:
        [n_senders] metric after each sender's path patch, averaged over prompts. A sender at or
        above every receiver's layer has no path: its value is the unpatched corrupted metric.

    Raises:
        InterpError: bad receiver input, heads or layers out of range, no receivers.
    """
    _check_pair(clean, corrupt)
    if receiver_input not in ("q", "k", "v"):
        raise InterpError(f"receiver input '{receiver_input}' is not one of q, k, v")
    if not receivers:
        raise InterpError("no receivers given: pass (layer, head) pairs of the receiving heads")
    n_recv_heads = lm.arch.n_heads if receiver_input == "q" else lm.arch.n_kv_heads
    recv: dict[int, list[int]] = {}
    for layer, head in receivers:
        lm.arch.check_layer(int(layer))
        if not 0 <= int(head) < n_recv_heads:
            kind = "query" if receiver_input == "q" else "kv"
            raise InterpError(
                f"receiver head {head} out of range: {receiver_input} has {n_recv_heads} {kind} heads (0-{n_recv_heads - 1})"
            )
        recv.setdefault(int(layer), []).append(int(head))
    senders = torch.as_tensor(senders, dtype=torch.long).reshape(-1, 2).cpu()
    for layer, head in senders.tolist():
        lm.arch.check_layer(layer)
        lm.arch.check_head(head)
    n, n_pos = clean.shape
    clean, corrupt = clean.to(lm.device), corrupt.to(lm.device)
    top = max(recv)
    frozen_layers = list(range(top))  # layers that can write into some receiver's input
    if not frozen_layers:
        raise InterpError("receivers in layer 0 read only the embeddings: no head can send to them")
    keep = ("z", "mlp_out") if freeze_mlps else ("z",)
    with capture(lm, layers=frozen_layers, keep=keep) as cap:
        _answer_logits(lm, corrupt)
    corrupt_z = {layer: cap["z", layer] for layer in frozen_layers}
    corrupt_mlp = {layer: cap["mlp_out", layer] for layer in frozen_layers} if freeze_mlps else {}
    sender_layers = sorted({s for s in senders[:, 0].tolist() if s < top})
    clean_z = {}
    if sender_layers:
        with capture(lm, layers=sender_layers, keep=("z",)) as cap:
            _answer_logits(lm, clean)
        clean_z = {layer: cap["z", layer] for layer in sender_layers}
    per_pass = max(1, (batch_rows or _default_rows(lm, n, n_pos)) // n)
    out = torch.empty(len(senders), dtype=torch.float64)
    bar = _progress(len(senders), f"path patching -> {receiver_input}", progress)
    try:
        for start in range(0, len(senders), per_pass):
            chunk = senders[start : start + per_pass].tolist()
            c = len(chunk)
            edits = []
            for layer in frozen_layers:
                base = corrupt_z[layer].repeat(c, 1, 1, 1)
                rows = [(j, layer, head, -1) for j, (sl, head) in enumerate(chunk) if sl == layer]
                if rows:
                    mask = _mask(rows, tuple(base.shape), n, True).to(base.device)
                    base = torch.where(mask.unsqueeze(-1), clean_z[layer].repeat(c, 1, 1, 1), base)
                edits.append(Edit("z", layer, _constant(base)))
                if freeze_mlps:
                    edits.append(Edit("mlp_out", layer, _constant(corrupt_mlp[layer].repeat(c, 1, 1))))
            with intervene(lm, edits), capture(lm, layers=sorted(recv), keep=(receiver_input,)) as cap:
                _answer_logits(lm, corrupt.repeat(c, 1))
            edits = [Edit(receiver_input, layer, _heads_from(cap[receiver_input, layer], heads)) for layer, heads in recv.items()]
            with intervene(lm, edits):
                logits = _answer_logits(lm, corrupt.repeat(c, 1))
            for j in range(c):
                out[start + j] = _evaluate(metric, logits[j * n : (j + 1) * n], n).double().mean()
            del logits
            bar.update(c)
    finally:
        bar.close()
    return out


def _constant(value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: value.to(x.dtype)


def _heads_from(value: torch.Tensor, heads: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Edit function: the given heads [:, heads] come from ``value`` (same batched shape)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, heads] = value[:, heads].to(x.dtype)
        return x

    return fn


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------


def _resolve_metric(metric, batch, clean_logits, corrupt_logits) -> tuple[Metric, str]:
    if callable(metric):
        return metric, getattr(metric, "__name__", "custom")
    return make_metric(metric, batch, clean_logits, corrupt_logits), metric


def patch_task(
    lm,
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
) -> PatchResult:
    """Patch one target of a task batch (any `TaskBatch`, e.g. from `task_from_prompts`).

    Args:
        lm: a `LoadedModel`.
        batch: the task.
        target, method, by_pos, layers, batch_rows, compare, progress: see `PatchConfig`.
        metric: a name of `METRICS` or a callable ``logits [batch, 1, vocab] -> [batch]`` (the
            logits at the answer position; one value per prompt).
        done, on_pass: resume and store activation patches (see `activation_patching`).

    Returns:
        A `PatchResult` (with the task's `Baseline`).
    """
    if method not in METHODS:
        raise InterpError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    site, index, axes, shape, head_axis = target_index(lm, target, batch.n_pos, by_pos=by_pos, layers=layers)
    _check_pair(batch.clean, batch.corrupt)
    base, clean_logits, corrupt_logits = task_baseline(lm, batch)
    fn, metric_name = _resolve_metric(metric, batch, clean_logits, corrupt_logits)
    _evaluate(fn, clean_logits, batch.n)  # a bad metric fails here, before the sweep
    m_corrupt = float(_evaluate(fn, corrupt_logits, batch.n).double().mean())
    del clean_logits, corrupt_logits
    common = dict(
        task=batch.task, target=target, metric=metric_name, axes=axes, baseline=base,
        pos_labels=batch.pos_labels if "pos" in axes else (), model=lm.name, head_axis=head_axis,
    )
    act_result = None
    if method == "activation" or compare:
        values = activation_patching(
            lm, batch.clean, batch.corrupt, site, index, fn, batch_rows=batch_rows, progress=progress,
            done=done, on_pass=on_pass,
        )
        act_result = PatchResult(method="activation", scores=_dense(index, values, axes, shape), **common)
        if method == "activation":
            return act_result
    estimate = attribution_patching(lm, batch.clean, batch.corrupt, site, index, fn)
    if act_result is None:
        return PatchResult(method="attribution", scores=_dense(index, estimate, axes, shape), **common)
    # compare the estimate with the activation effect M(patched) - M(corrupt)
    effect = replace(act_result, scores=act_result.scores - m_corrupt)
    attr = PatchResult(method="attribution", scores=_dense(index, estimate, axes, shape), activation=act_result, **common)
    return replace(attr, correlation=method_correlation(attr, effect))


def path_patch_task(
    lm,
    batch: TaskBatch,
    receivers: Sequence[tuple[int, int]],
    receiver_input: str = "q",
    *,
    senders: Optional[Sequence[tuple[int, int]]] = None,
    metric: Union[str, Metric] = "score",
    freeze_mlps: bool = False,
    batch_rows: Optional[int] = None,
    progress: bool = True,
) -> PatchResult:
    """Path patching of a task: every sender head (default: all heads below the deepest
    receiver) -> the receivers' ``receiver_input``. Returns a layer x head `PatchResult`
    (target "path:q" etc.; NaN for heads not used as senders)."""
    base, clean_logits, corrupt_logits = task_baseline(lm, batch)
    fn, metric_name = _resolve_metric(metric, batch, clean_logits, corrupt_logits)
    _evaluate(fn, clean_logits, batch.n)
    del clean_logits, corrupt_logits
    if senders is None:
        top = max(int(layer) for layer, _ in receivers) if receivers else 0
        senders = [(layer, h) for layer in range(top) for h in range(lm.arch.n_heads)]
    index = torch.tensor([(int(a), int(b)) for a, b in senders], dtype=torch.long).reshape(-1, 2)
    values = path_patching(
        lm, batch.clean, batch.corrupt, index, receivers, receiver_input, fn,
        freeze_mlps=freeze_mlps, batch_rows=batch_rows, progress=progress,
    )
    full = torch.cat([index, torch.full((len(index), 1), -1)], dim=1)
    shape = (lm.arch.n_layers, lm.arch.n_heads)
    return PatchResult(
        task=batch.task, target=f"path:{receiver_input}", method="path", metric=metric_name,
        axes=("layer", "head"), scores=_dense(full, values, ("layer", "head"), shape), baseline=base,
        model=lm.name, head_axis="head",
    )


def config_batch(lm, config: PatchConfig) -> TaskBatch:
    """The task batch ``config`` describes: a generated task, or the pairs file of task "pairs".

    Raises:
        InterpError: bad settings, a model without tokenizer, words that are not single tokens,
            a bad pairs file (the message names the line).
    """
    config.validate()
    if lm.tokenizer is None:
        raise InterpError("this model has no tokenizer: the tasks are built from text; load the model with its tokenizer")
    if config.task == "pairs":
        return task_from_jsonl(lm.tokenizer, config.pairs)
    return make_task(lm.tokenizer, config.task, n=config.n, seed=config.seed)


def run_patching(lm, config: PatchConfig = PatchConfig(), *, log=None) -> PatchResult:
    """Build the task from ``config``, report its baseline, and patch (the CLI's one call).

    Args:
        lm: a `LoadedModel` with a tokenizer.
        config: `PatchConfig`.
        log: optional `interp.runs.SampleLog` opened with this run's settings: activation
            patches are appended to it pass by pass, and patches it already holds (from an
            interrupted run) are not run again.

    Returns:
        A `PatchResult`; with ``method="attribution", compare=True`` it carries the activation
        result (``.activation``) and their correlation.

    Raises:
        InterpError: bad settings, a model without tokenizer, words that are not single tokens,
            a bad pairs file.
    """
    batch = config_batch(lm, config)
    done, on_pass = _log_hooks(log) if log is not None else (None, None)
    return patch_task(
        lm, batch, target=config.target, method=config.method, metric=config.metric, by_pos=config.by_pos,
        layers=config.layers, batch_rows=config.batch_rows, compare=config.compare, progress=config.progress,
        done=done, on_pass=on_pass,
    )


def _log_hooks(log) -> tuple[dict[Patch, float], OnPass]:
    """Finished patches from a SampleLog (one record per forward pass) and a callback that appends."""
    done: dict[Patch, float] = {}
    for record in log:
        for patch, value in zip(record["patches"], record["values"]):
            done[tuple(int(x) for x in patch)] = float(value)

    def on_pass(patches: list[Patch], values: list[float]) -> None:
        log.add(f"pass-{len(log):06d}", {"patches": [list(p) for p in patches], "values": values})

    return done, on_pass


# --------------------------------------------------------------------------------------------
# Circuits
# --------------------------------------------------------------------------------------------


def head_scores(result: PatchResult) -> np.ndarray:
    """[layer, head] scores; for per-position results the value of largest |score| over positions.

    Raises:
        InterpError: the result has no head axis (residual targets).
    """
    if "head" not in result.axes:
        raise InterpError(
            f"the {result.target} result has no head axis: circuits need a head target (head_out, q, k or v)"
        )
    s = result.scores
    if "pos" not in result.axes:
        return s
    filled = np.where(np.isfinite(s), s, 0.0)
    pick = np.abs(filled).argmax(axis=-1)
    out = np.take_along_axis(s, pick[..., None], axis=-1)[..., 0]
    out[~np.isfinite(s).any(axis=-1)] = np.nan
    return out


def top_heads(result: PatchResult, k: int = 10, *, signed: bool = False) -> list[tuple[int, int, float]]:
    """The ``k`` heads with the largest |score| (or largest score if ``signed``): (layer, head, score)."""
    if k < 1:
        raise InterpError(f"top k = {k}: ask for at least one head")
    s = head_scores(result)
    flat = s.reshape(-1)
    finite = np.flatnonzero(np.isfinite(flat))
    key = flat[finite] if signed else np.abs(flat[finite])
    order = finite[np.argsort(-key, kind="stable")][:k]
    n_heads = s.shape[1]
    return [(int(i // n_heads), int(i % n_heads), float(flat[i])) for i in order]


@dataclass(frozen=True)
class CircuitOverlap:
    """Overlap of two tasks' circuits (Merullo et al. 2023).

    Attributes:
        top: circuit size K (top-K heads by |score| of each task).
        heads_a, heads_b: the circuits, (layer, head) in rank order.
        shared: heads in both, in a's rank order.
        share: len(shared) / K -- the share of in-circuit heads common to both tasks.
        jaccard: len(shared) / len(union).
        task_a, task_b: task names.
    """

    top: int
    heads_a: tuple[tuple[int, int], ...]
    heads_b: tuple[tuple[int, int], ...]
    shared: tuple[tuple[int, int], ...]
    share: float
    jaccard: float
    task_a: str = ""
    task_b: str = ""

    def to_dataframe(self):
        """One row per head in either circuit: layer, head, rank_a, rank_b, shared."""
        import pandas as pd

        rank_a = {h: i + 1 for i, h in enumerate(self.heads_a)}
        rank_b = {h: i + 1 for i, h in enumerate(self.heads_b)}
        heads = list(self.heads_a) + [h for h in self.heads_b if h not in rank_a]
        return pd.DataFrame(
            {
                "layer": [h[0] for h in heads],
                "head": [h[1] for h in heads],
                "rank_a": pd.array([rank_a.get(h) for h in heads], dtype="Int64"),
                "rank_b": pd.array([rank_b.get(h) for h in heads], dtype="Int64"),
                "shared": [h in rank_a and h in rank_b for h in heads],
            }
        )


def circuit_overlap(a: PatchResult, b: PatchResult, top: int = 10) -> CircuitOverlap:
    """Share of the top-``top`` heads (by |score|) that two results have in common.

    Raises:
        InterpError: results without heads, or of models with different layer/head counts.
    """
    sa, sb = head_scores(a), head_scores(b)
    if sa.shape != sb.shape or (a.head_axis or "head") != (b.head_axis or "head"):
        raise InterpError(
            f"the two runs have different layer x head grids {sa.shape} and {sb.shape}: compare runs of the same "
            "model and the same head kind (k/v runs are per kv head)"
        )
    ha = tuple((layer, head) for layer, head, _ in top_heads(a, top))
    hb = tuple((layer, head) for layer, head, _ in top_heads(b, top))
    shared = tuple(h for h in ha if h in set(hb))
    union = set(ha) | set(hb)
    k = max(len(ha), len(hb), 1)
    return CircuitOverlap(
        top=top, heads_a=ha, heads_b=hb, shared=shared, share=len(shared) / k,
        jaccard=len(shared) / max(len(union), 1), task_a=a.task, task_b=b.task,
    )


def method_correlation(a: PatchResult, b: PatchResult) -> float:
    """Pearson r between two results' scores over the cells both computed (NaN if < 3 cells)."""
    if a.scores.shape != b.scores.shape:
        raise InterpError(f"results have different shapes {a.scores.shape} and {b.scores.shape}: compare the same target")
    x, y = a.scores.reshape(-1), b.scores.reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return math.nan
    return float(np.corrcoef(x[ok], y[ok])[0, 1])

"""Results of patching: the task's `Baseline`, the `PatchResult` of a sweep, and the pure steps
that build them from logits and per-patch values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.checks import Check, as_records, at_least
from interp.analyses.patching.metrics import logit_diff
from interp.analyses.patching.table import normalise
from interp.analyses.ranking import rank_heads
from interp.errors import InterpError

__all__ = ["Baseline", "PatchResult", "head_scores", "top_heads", "baseline_of", "baseline_checks", "dense_scores"]


@dataclass(frozen=True)
class Baseline:
    """The task before patching (docs/METRICS.md#circuit-patching: accuracy, logit differences).

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

    def summary(self) -> dict:
        """Every field, JSON-friendly (run.json)."""
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
        activation: with ``compare``, the activation-patching result the estimate was compared with.
        position_map: with ``position_map``, the resid_pre x position result by attribution patching.
        checks: whether the model does the task (`baseline_checks`); the scores mean nothing when
            one fails (the runner fills them from the config's thresholds).
        prompts: the task's clean prompts (the runner fills them; e.g. to draw a head on one).
        metric_clean, metric_corrupt: the metric of the unpatched clean and corrupted runs (mean
            over prompts): the `normalised` scores' end points.
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
    activation: Optional[PatchResult] = field(default=None, repr=False)
    position_map: Optional[PatchResult] = field(default=None, repr=False)
    checks: tuple[Check, ...] = ()
    prompts: tuple[str, ...] = field(default=(), repr=False)
    metric_clean: Optional[float] = None
    metric_corrupt: Optional[float] = None

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def normalised(self) -> np.ndarray:
        """``scores`` as (score - corrupt) / (clean - corrupt) of the metric (docs/METRICS.md#circuit-patching):
        0 where a patch does nothing, 1 where it restores the clean run. Attribution scores are
        already differences from the corrupted run. NaN when the clean and corrupted metric are
        unknown (an old run folder) or equal."""
        if self.metric_clean is None or self.metric_corrupt is None:
            return np.full_like(self.scores, np.nan, dtype=np.float64)
        effect = self.method == "attribution"
        return normalise(self.scores, self.metric_clean, self.metric_corrupt, effect=effect)

    def to_grid(self, normalised: bool = False) -> np.ndarray:
        """The scores shaped like the model: [layer, head] (head targets), [layer, head, position]
        (by position), [layer, position] (residual targets); NaN where nothing was patched (k and
        v count kv heads).

        Args:
            normalised: the `normalised` scores instead of the metric.
        """
        return (self.normalised if normalised else self.scores).astype(np.float64, copy=True)

    def to_dataframe(self) -> pd.DataFrame:
        """Long table, one row per patch: layer, head, position, pos_label, score, normalised
        (head and position <NA> where they do not apply)."""
        grid = np.indices(self.scores.shape).reshape(len(self.axes), -1).T
        values = self.scores.reshape(-1)
        keep = np.isfinite(values)
        cols = {name: grid[keep, i] for i, name in enumerate(self.axes)}
        n = int(keep.sum())
        df = pd.DataFrame(
            {
                "layer": cols["layer"],
                "head": pd.array(cols["head"] if "head" in cols else [None] * n, dtype="Int64"),
                "position": pd.array(cols["pos"] if "pos" in cols else [None] * n, dtype="Int64"),
            }
        )
        if "pos" in cols and self.pos_labels:
            df["pos_label"] = [self.pos_labels[p] for p in cols["pos"]]
        else:
            df["pos_label"] = ""
        df["score"] = values[keep]
        df["normalised"] = self.normalised.reshape(-1)[keep]
        return df

    def top(self, k: int = 10, *, by: Optional[str] = None) -> pd.DataFrame:
        """The ``k`` rows of `to_dataframe` with the largest |``by``|: ``"normalised"`` (the default
        where it is known: the effect, whatever the metric) or ``"score"``."""
        if by not in (None, "normalised", "score"):
            raise InterpError(f"top(by={by!r}): use 'score' or 'normalised'")
        df = self.to_dataframe()
        by = by or ("normalised" if df["normalised"].notna().any() else "score")
        order = df[by].abs().sort_values(ascending=False, na_position="last").index
        return df.loc[order].head(k).reset_index(drop=True)

    def summary(self) -> dict:
        """Headline numbers for run.json: the task, its baseline, the top 10 heads (head targets)
        and the attribution-activation correlation (with ``compare``)."""
        return {
            "task": self.task,
            **(self.baseline.summary() if self.baseline else {}),
            "top_heads": [{"layer": a, "head": h, "score": s} for a, h, s in top_heads(self, 10)]
            if "head" in self.axes
            else None,
            "correlation_attribution_activation": self.correlation,
            "checks": as_records(self.checks),
        }

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
            "baseline": self.baseline.summary() if self.baseline else None,
            "checks": as_records(self.checks),
            "metric_clean": self.metric_clean,
            "metric_corrupt": self.metric_corrupt,
        }

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, meta: dict) -> PatchResult:
        """Rebuild a result from its `to_dataframe()` table and `meta()` (e.g. a run folder)."""
        try:
            axes = tuple(meta["axes"])
            scores = np.full(tuple(meta["shape"]), np.nan)
            column = {"pos": "position" if "position" in df.columns else "pos"}  # "pos": older run folders
            idx = tuple(df[column.get(a, a)].astype(int).to_numpy() for a in axes)
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
            checks=tuple(Check.from_dict(c) for c in meta.get("checks") or ()),
            metric_clean=meta.get("metric_clean"),
            metric_corrupt=meta.get("metric_corrupt"),
        )


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
    """The ``k`` heads with the largest |score| (or largest score if ``signed``): (layer, head, score);
    heads not patched (NaN) are not ranked (`interp.analyses.rank_heads`)."""
    return rank_heads(head_scores(result), k, by="value" if signed else "abs")


def baseline_of(
    clean_logits: Float[Tensor, "batch pos vocab"],
    corrupt_logits: Float[Tensor, "batch pos vocab"],
    correct: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"],
) -> Baseline:
    """The task before patching, from the clean and corrupted runs' answer-position logits."""
    ld_c = logit_diff(clean_logits, correct, wrong)
    ld_x = logit_diff(corrupt_logits, correct, wrong)
    top1 = clean_logits[:, -1].argmax(-1).cpu() == correct.cpu()
    return Baseline(
        n=int(correct.shape[0]),
        clean_accuracy=float((ld_c > 0).float().mean()),
        clean_top1=float(top1.float().mean()),
        corrupt_accuracy=float((ld_x > 0).float().mean()),
        clean_logit_diff=float(ld_c.mean()),
        corrupt_logit_diff=float(ld_x.mean()),
    )


def baseline_checks(
    baseline: Baseline, min_clean_accuracy: float = 0.8, min_logit_diff: float = 1.0
) -> tuple[Check, ...]:
    """Whether the model does the task, so that patching scores mean something.

    The normalised score (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt) is undefined when the
    clean behaviour is absent: when the model does not prefer the correct answer on the clean
    prompts, or when the clean and corrupted runs barely differ (a near-zero denominator).

    Returns:
        (clean_accuracy >= ``min_clean_accuracy``, LD_clean - LD_corrupt >= ``min_logit_diff``).
    """
    gap = baseline.clean_logit_diff - baseline.corrupt_logit_diff
    return (
        at_least(
            "clean_accuracy", baseline.clean_accuracy, min_clean_accuracy,
            f"share of the {baseline.n} clean prompts whose correct answer outscores the wrong one; below the "
            "threshold the model does not do the task and its heads cannot be a circuit for it",
        ),
        at_least(
            "clean_minus_corrupt_logit_diff", gap, min_logit_diff,
            f"mean logit difference clean ({baseline.clean_logit_diff:.2f}) minus corrupted "
            f"({baseline.corrupt_logit_diff:.2f}), the normalised score's denominator; near or below zero "
            "the normalised scores are undefined",
        ),
    )  # fmt: skip


def dense_scores(
    index: Int[Tensor, "patch 3"], values: Float[Tensor, " patch"], axes: tuple[str, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """Scatter per-patch values (patch i at (layer, head, pos) = ``index[i]``) into a NaN-filled
    array over ``axes`` of ``shape``."""
    out = np.full(shape, np.nan)
    cols = {"layer": 0, "head": 1, "pos": 2}
    idx = tuple(index[:, cols[a]].numpy() for a in axes)
    out[idx] = values.detach().double().cpu().numpy()
    return out

"""Circuits from patching results: the overlap of two tasks' circuits, the share of top-K heads
common to both (Merullo et al. 2023 report about 78% between IOI and Colored Objects on GPT-2
Medium); the correlation of two methods' scores. A result's top heads (`head_scores`,
`top_heads`) live with `PatchResult` and are re-exported here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.analyses.patching.results import PatchResult, head_scores, top_heads
from interp.errors import InterpError

__all__ = ["head_scores", "top_heads", "CircuitOverlap", "circuit_overlap", "method_correlation"]


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

    def to_dataframe(self) -> pd.DataFrame:
        """One row per head in either circuit: layer, head, rank_a, rank_b, shared."""
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
        top=top,
        heads_a=ha,
        heads_b=hb,
        shared=shared,
        share=len(shared) / k,
        jaccard=len(shared) / max(len(union), 1),
        task_a=a.task,
        task_b=b.task,
    )


def method_correlation(a: PatchResult, b: PatchResult) -> float:
    """Pearson r between two results' scores over the cells both computed (NaN if < 3 cells)."""
    if a.scores.shape != b.scores.shape:
        raise InterpError(
            f"results have different shapes {a.scores.shape} and {b.scores.shape}: compare the same target"
        )
    x, y = a.scores.reshape(-1), b.scores.reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return math.nan
    return float(np.corrcoef(x[ok], y[ok])[0, 1])

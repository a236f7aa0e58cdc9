"""From the kernel's statistics to the findings: head groups, WAAD, FAI, preplan and anchor tokens.

Pure functions over numpy arrays (docs/METRICS.md#preplan-and-anchor-tokens): the quantile
marks, the local/global head split, WAAD jumps, the anchor coupling, and `analyse`, which
returns the typed `PreplanFindings` of one prompt + response.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int

from interp.analyses.preplan.config import PreplanConfig
from interp.analyses.preplan.statistics import PreplanStats
from interp.errors import InterpError

__all__ = [
    "PreplanFindings",
    "bottom_quantile",
    "top_quantile",
    "head_groups",
    "waad_jumps",
    "couple_anchors",
    "analyse",
]


def bottom_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Mask of the finite entries at or below the q-quantile of the finite entries (NaN: False)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=bool)
    return finite & (values <= np.quantile(values[finite], q))


def top_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Mask of the finite entries at or above the (1-q)-quantile: the top share q (NaN: False)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=bool)
    return finite & (values >= np.quantile(values[finite], 1.0 - q))


def head_groups(
    span: np.ndarray, local_quantile: float = 0.3, global_quantile: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Local and global heads from their spans.

    Args:
        span: [layer, head] mean attention distance over the response (any shape works).
        local_quantile: share of heads with the lowest span that are local.
        global_quantile: share with the highest span that are global.

    Returns:
        (local, global_) boolean masks of span's shape.
    """
    local = bottom_quantile(span, local_quantile)
    global_ = top_quantile(span, global_quantile)
    if (local & global_).any():
        raise InterpError(
            "some heads are both local and global (all spans equal?): the head spans do not separate; "
            "use more layers or a longer response"
        )
    return local, global_


def waad_jumps(waad: np.ndarray) -> np.ndarray:
    """Delta_t = |WAAD_t - WAAD_{t+1}| per response token, [resp]; NaN for the last token."""
    waad = np.asarray(waad, dtype=float)
    delta = np.full(waad.shape, np.nan)
    delta[:-1] = np.abs(waad[:-1] - waad[1:])
    return delta


def couple_anchors(
    anchor: np.ndarray, preplan: np.ndarray, waad: np.ndarray, tau_waad: float, k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Anchors that are locally dominated and the preplan token that sets them up.

    An anchor t is locally dominated when WAAD_t <= tau_waad and a preplan token lies among
    t-k .. t-1 (within the response).

    Args:
        anchor: [resp] bool mask of anchor tokens.
        preplan: [resp] bool mask of preplan tokens.
        waad: [resp] WAAD per token.
        tau_waad: WAAD cut.
        k: how many tokens before the anchor to search.

    Returns:
        (dominated [resp] bool, link [resp] int: response index of the nearest preplan token
        before a dominated anchor, -1 elsewhere).
    """
    anchor, preplan = np.asarray(anchor, bool), np.asarray(preplan, bool)
    waad = np.asarray(waad, dtype=float)
    dominated = np.zeros(anchor.shape, dtype=bool)
    link = np.full(anchor.shape, -1, dtype=np.int64)
    for t in np.flatnonzero(anchor & (waad <= tau_waad)):
        before = np.flatnonzero(preplan[max(0, t - k) : t])
        if before.size:
            dominated[t] = True
            link[t] = max(0, t - k) + int(before[-1])
    return dominated, link


@dataclass(frozen=True, eq=False)
class PreplanFindings:
    """What `analyse` finds in the statistics of one prompt + response (pure; no model).

    Head arrays are [layer, head] over the chosen layers; token arrays are [resp] (response
    index r sits at absolute position ``n_prompt + r``).

    Attributes:
        span: [layer, head] d(l, h), the mean attention distance over the response rows.
        local: [layer, head] heads in the lowest ``local_quantile`` of span.
        global_: [layer, head] heads in the highest ``global_quantile`` of span.
        waad: [resp] WAAD_t, mean over local heads of waad_t(W).
        fai: [resp] FAI_s, mean over global heads of band_s(lo, hi) (NaN: no query in the band).
        delta: [resp] Delta_t = |WAAD_t - WAAD_{t+1}| (NaN for the last token).
        preplan: [resp] Delta_t in its top ``preplan_quantile``.
        anchor: [resp] FAI_s in its top ``anchor_quantile``.
        dominated: [resp] anchors with WAAD_t <= tau_waad and a preplan token in the k before.
        link: [resp] response index of the preplan token that sets up a dominated anchor, -1 elsewhere.
        tau_waad: the WAAD cut used.
    """

    span: Float[np.ndarray, "layer head"]
    local: Bool[np.ndarray, "layer head"]
    global_: Bool[np.ndarray, "layer head"]
    waad: Float[np.ndarray, " resp"]
    fai: Float[np.ndarray, " resp"]
    delta: Float[np.ndarray, " resp"]
    preplan: Bool[np.ndarray, " resp"]
    anchor: Bool[np.ndarray, " resp"]
    dominated: Bool[np.ndarray, " resp"]
    link: Int[np.ndarray, " resp"]
    tau_waad: float


def analyse(stats: PreplanStats, config: PreplanConfig) -> PreplanFindings:
    """Everything the analysis finds from the kept statistics (pure; no model).

    Returns:
        The `PreplanFindings`: head groups, WAAD and FAI, preplan and anchor tokens, coupling.
    """
    span = np.nanmean(stats.dist, axis=-1)  # d(l, h) = mean over response rows of dist_t
    local, global_ = head_groups(span, config.local_quantile, config.global_quantile)
    waad = stats.waad[local].mean(axis=0)  # [resp]: mean over local heads
    with np.errstate(invalid="ignore"):
        fai = stats.band[global_].mean(axis=0)  # [resp]: NaN where no query lies in the band
    delta = waad_jumps(waad)
    preplan = top_quantile(delta, config.preplan_quantile)
    anchor = top_quantile(fai, config.anchor_quantile)
    tau = float(np.median(waad)) if config.tau_waad is None else float(config.tau_waad)
    dominated, link = couple_anchors(anchor, preplan, waad, tau, config.coupling_k)
    return PreplanFindings(
        span=span, local=local, global_=global_, waad=waad, fai=fai, delta=delta,
        preplan=preplan, anchor=anchor, dominated=dominated, link=link, tau_waad=tau,
    )  # fmt: skip

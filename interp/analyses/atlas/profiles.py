"""Per-head profiles against query position: bins, the per-text reduction, concentration, kinds.

Per head and per log-spaced bin of query positions, averaged over texts, the row statistics of
`interp.kernels.attention_stats` (docs/METRICS.md, section "Head atlas"): mass on the first
token, on the first ``sinks`` tokens, entropy, mean distance, WAAD, top-1 mass, self mass a_ii,
previous-token mass a_{i,i-1}, recent mass within W tokens and distant mass beyond the sinks and
the last W tokens for each W of ``windows``; per head, the concentration of received attention
(share of all attention received that goes to the top 1% of keys). From the statistics at the
full length (the last position bin) each head gets a ``kind`` (`classify`).

Value-weighted profiles (issue 31): the same masses with attention weighted by what each key
moves, u_ij = a_ij ||W_O^h v_j|| (the kernel's ``key_weight``, `interp.hooks.value_norms`):
``w_first``, ``w_sink``, ``w_self_mass``, ``w_recent_<W>``, ``w_distant_<W>``, each a share of
sum_j u_ij (docs/METRICS.md#value-weighted-sinks). ``w_distant`` at the policy window scores
the ``vnorm`` selector (`interp.analyses.atlas.policy.SELECTORS`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyses.atlas.config import AtlasConfig

__all__ = [
    "KINDS",
    "WEIGHTED_ROW_METRICS",
    "metric_names",
    "position_bins",
    "concentration",
    "reduce_layer",
    "classify",
]

KINDS = ("sink", "previous-token", "local", "global")
"""Head kinds, in the order they are tested (docs/METRICS.md#head-atlas)."""

_ROW_METRICS = ("first", "sink", "entropy", "dist", "waad", "top1p", "self_mass", "prev")
WEIGHTED_ROW_METRICS = ("w_first", "w_sink", "w_self_mass")
"""Value-weighted row metrics (the kernel's statistics of the same name, key_weight = ||W_O^h v_j||)."""


def metric_names(windows: Sequence[int]) -> tuple[str, ...]:
    """The profile metrics, in order: the row metrics, recent_<w> and distant_<w> per window, then
    the value-weighted ones (w_first, w_sink, w_self_mass, w_recent_<w>, w_distant_<w>)."""
    plain = _ROW_METRICS + tuple(f"recent_{w}" for w in windows) + tuple(f"distant_{w}" for w in windows)
    weighted = tuple(f"w_recent_{w}" for w in windows) + tuple(f"w_distant_{w}" for w in windows)
    return plain + WEIGHTED_ROW_METRICS + weighted


def position_bins(length: int, n_bins: int) -> np.ndarray:
    """Log-spaced bins of query positions 0..length-1: ``bin_of[p]`` for each position.

    Position p (counted from the first real token) falls in bin b when
    ``edges[b] <= p + 1 < edges[b + 1]`` with ``edges`` the distinct rounded values of
    geomspace(1, length, n_bins + 1) (the last position joins the last bin); duplicate
    edges at short lengths merge bins, so there can be fewer than ``n_bins``.

    Returns:
        int64 [length]: the bin of each position, 0..n-1, non-decreasing, every bin non-empty.
    """
    edges = np.unique(np.round(np.geomspace(1, length, n_bins + 1)).astype(np.int64))
    bins = np.searchsorted(edges, np.arange(1, length + 1), side="right") - 1
    bins = np.clip(bins, 0, len(edges) - 2 if len(edges) > 1 else 0)
    _, bins = np.unique(bins, return_inverse=True)  # renumber so that every bin is non-empty
    return bins.astype(np.int64)


def concentration(recv: Float[Tensor, "head key_pos"], share: float = 0.01) -> Float[Tensor, " head"]:
    """Share of the attention received by the top ``share`` of keys (at least one key).

    Args:
        recv: attention received per key (sum over query rows), NaN on padded keys.

    Returns:
        [head] in (0, 1]: sum of the ceil(share x n_keys) largest recv / sum of recv.
    """
    real = recv.nan_to_num(0.0).double()
    n_top = max(1, math.ceil(share * int(torch.isfinite(recv[0]).sum())))
    top = real.topk(n_top, dim=-1).values.sum(-1)
    return (top / real.sum(-1)).float()


def reduce_layer(
    rows: Mapping[str, Float[Tensor, "head n_rows"]],
    bins: np.ndarray,
    n_bins: int,
    recv: Optional[Float[Tensor, "head key_pos"]],
) -> dict[str, Any]:
    """One layer of one text: per-bin sums of every row metric, the row count per bin, the concentration.

    Args:
        rows: metric name -> [head, n_rows] per query row (positions 0..n_rows-1 from the first
            real token; NaN rows are skipped).
        bins: the bin of each position (`position_bins`).
        n_bins: number of bins.
        recv: received attention [head, key_pos] (None: no concentration).

    Returns:
        JSON-able: ``sums`` ``{metric: [head][bin]}``, ``counts`` ``{metric: [head][bin]}`` (rows with
        a finite value), ``concentration`` [head] or None.
    """
    index = torch.as_tensor(bins)
    sums, counts = {}, {}
    for name, values in rows.items():
        values = values.double().cpu()
        ok = torch.isfinite(values)
        s = torch.zeros(values.shape[0], n_bins, dtype=torch.float64).index_add_(1, index, values.nan_to_num(0.0))
        c = torch.zeros(values.shape[0], n_bins, dtype=torch.float64).index_add_(1, index, ok.double())
        sums[name], counts[name] = s.tolist(), c.tolist()
    conc = concentration(recv).tolist() if recv is not None else None
    return {"sums": sums, "counts": counts, "concentration": conc}


def classify(full: Mapping[str, np.ndarray], config: AtlasConfig) -> np.ndarray:
    """The kind of each head from its statistics at the full length (arrays [layer, head]).

    Tested in order: sink (mass on the first S tokens >= sink_min), previous-token (mass on
    i - 1 >= prev_min), local (distant mass at the policy window <= distant_max), else global.
    """
    W = config.policy_window
    kind = np.full(full["sink"].shape, "global", dtype=object)
    kind[full[f"distant_{W}"] <= config.distant_max] = "local"
    kind[full["prev"] >= config.prev_min] = "previous-token"
    kind[full["sink"] >= config.sink_min] = "sink"
    return kind

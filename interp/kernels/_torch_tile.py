"""The hot loop of the torch backend: every statistic of one chunk of complete softmax rows.

`tile_stats` takes one score tile (c query rows of every head against the keys they may
see) and returns its row statistics and column sums as a `TileStats`; `_torch.py` plans the
chunks, builds the inputs and accumulates the outputs (its module docstring narrates the
algorithm). It is pure tensor code, so `torch.compile` can take it whole (the benchmark does).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["TileStats", "tile_stats"]

_MASKED = -1e30  # finite "minus infinity": p = 0 there and p * s stays 0 (never NaN)


class TileStats(NamedTuple):
    """What `tile_stats` returns for one chunk; rows are [kv_head, group * c] (head-major)."""

    top1: Tensor  # [kv, g*c] tile column of max_j p_ij
    top1p: Tensor  # [kv, g*c]
    lse: Tensor  # [kv, g*c]
    entropy: Tensor  # [kv, g*c]
    rowdot: Tensor  # [kv, g*c, 2 + C] p @ v
    waad_part: Tensor  # [kv, g*c] waad's band sum
    recv: Tensor | None  # [kv, g, n_keys] sum of p over real rows (None: no column statistics)
    band: Tensor | None  # [kv, g, n_b] the band-masked column sums, or None
    mass: Tensor | None  # [kv, g*c] sum_j p_ij (None without a sink: it is 1)
    first: Tensor  # [kv, g*c] p of the first real token (0 when it is not in the tile)
    self_mass: Tensor | None  # [kv, g*c] p of the row's own key (None without self_col)
    masked: Tensor | None  # [kv, g*c, n_masks] the masked row sums (None without masks)
    # value-weighted (None without key_weight): the same sums over p_ij w_j
    w_total: Tensor | None = None  # [kv, g*c] sum_j p_ij w_j
    w_sink: Tensor | None = None  # [kv, g*c]
    w_first: Tensor | None = None  # [kv, g*c]
    w_self_mass: Tensor | None = None  # [kv, g*c]
    w_masked: Tensor | None = None  # [kv, g*c, n_masks]
    w_recv: Tensor | None = None  # [kv, g, n_keys] sum over real rows of p_ij w_j / w_total_i (None: no columns)


def tile_stats(
    qc: Tensor,
    kt: Tensor,
    softcap: float | None,
    vis: Tensor,
    vis_start: int,
    v: Tensor,
    waad_w: Tensor,
    waad_start: int,
    band_w: Tensor | None,
    band_start: int,
    row_w: Tensor | None,
    sink: Tensor | None = None,
    self_col: Tensor | None = None,
    first_col: int = -1,
    masks: list[Tensor] | None = None,
    mask_starts: list[int] | None = None,
    key_weight: Tensor | None = None,
) -> TileStats:
    """Statistics of one chunk of complete rows (the hot loop; `torch.compile`-able).

    Args:
        qc: [kv_head, group * c, d_head] scaled queries of the chunk, compute dtype.
        kt: [kv_head, d_head, n_keys] keys of the chunk's key range, transposed.
        softcap: None, or the cap of s = cap * tanh(s / cap).
        vis: [c, n_vis] bool visibility of the only tile columns where some row of the
            chunk cannot see the key, starting at column `vis_start`.
        v: [2 + n_segments, n_keys] the columns of the row matmul's V (see module doc).
        waad_w: [c, n_w] weights max(W - (a_i - j), 0) of tile columns from `waad_start`.
        band_w: [c, n_b] 0/1 band membership of real rows for tile columns from `band_start`
            (None: no column statistics or an empty band).
        row_w: [c] 1.0 for real query rows, 0.0 for padded rows (None: no column stats).
        sink: [kv_head, group * c] the sink logit of each row's head, compute dtype (None:
            no sink).
        self_col: [c] int64 tile column of each row's own key (clamped into the tile).
        first_col: tile column of the first real token, -1 when it is not in the tile.
        masks: [c, n_m] weights of tile columns from `mask_starts[m]`; one row sum each
            (the bands of recent / distant).
        mask_starts: the first tile column of each mask.
        key_weight: [kv_head, group, 1, n_keys] weight w_j of each key per head (None: no
            value-weighted statistics).

    Returns:
        TileStats (the shapes are there).
    """
    kv, gc, _ = qc.shape
    c = vis.shape[0]
    s = torch.bmm(qc, kt)  # [kv, g*c, n_keys]
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if vis.shape[1]:
        s4 = s.view(kv, gc // c, c, -1)
        s4[..., vis_start : vis_start + vis.shape[1]].masked_fill_(~vis, _MASKED)
    m, top1 = s.max(dim=-1)  # ties: the first maximal index, as torch.argmax
    p = torch.softmax(s, dim=-1)
    top1p = p.gather(-1, top1[..., None])[..., 0]  # = exp(m - lse) = 1 / sum_j exp(s_j - m)
    lse = m - torch.log(top1p)
    mass = None
    if sink is not None:  # the sink takes exp(sigma) of the normaliser: rescale every p
        lse_keys, lse = lse, torch.logaddexp(lse, sink)
        mass = torch.exp(lse_keys - lse)  # sum_j p_ij: what the sink leaves to the keys
        p = p * mass[..., None]
        top1p = top1p * mass
    p_dot_s = torch.matmul(p[..., None, :], s[..., :, None])[..., 0, 0]
    entropy = lse - p_dot_s if mass is None else mass * lse - p_dot_s  # -sum_j p log p, p = exp(s - lse)
    flat = p.view(-1, p.shape[-1])
    rowdot = torch.stack([torch.mv(flat, col) for col in v], dim=-1).view(kv, gc, -1)  # gemv beats a narrow gemm
    p4 = p.view(kv, gc // c, c, -1)
    waad_part = (p4[..., waad_start : waad_start + waad_w.shape[1]] * waad_w).sum(-1).view(kv, gc)
    recv = band = None
    if row_w is not None:
        recv = torch.matmul(row_w, p4)  # sum over real rows: [kv, g, n_keys]
        if band_w is not None:
            band = (p4[..., band_start : band_start + band_w.shape[1]] * band_w).sum(-2)
    first, self_mass, masked = _key_sums(p4, first_col, self_col, masks, mask_starts)
    weighted = {}
    if key_weight is not None:  # value-weighted: the same sums over p_ij w_j, and its column sums over rows
        pw4 = p4 * key_weight  # [kv, g, c, n_keys]
        total = pw4.sum(-1)  # [kv, g, c] sum_j p_ij w_j
        w_first, w_self_mass, w_masked = _key_sums(pw4, first_col, self_col, masks, mask_starts)
        weighted = dict(
            w_total=total.view(kv, gc),
            w_sink=torch.mv(pw4.reshape(-1, pw4.shape[-1]), v[1]).view(kv, gc),
            w_first=w_first,
            w_self_mass=w_self_mass,
            w_masked=w_masked,
        )
        if row_w is not None:  # sum_i p_ij w_j / total_i over real rows with total_i > 0
            per_row = torch.where(total > 0, row_w / total, 0.0)
            weighted["w_recv"] = torch.matmul(per_row[..., None, :], pw4)[..., 0, :]
    return TileStats(
        top1, top1p, lse, entropy, rowdot, waad_part, recv, band, mass, first, self_mass, masked, **weighted
    )


def _key_sums(
    p4: Tensor, first_col: int, self_col: Tensor | None, masks: list[Tensor] | None, mask_starts: list[int] | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(first, self_mass, masked sums) of a [kv, g, c, n_keys] tile; rows flattened to [kv, g*c]."""
    kv, g, c, _ = p4.shape
    first = p4[..., first_col].reshape(kv, g * c) if first_col >= 0 else p4.new_zeros(kv, g * c)
    self_mass = masked = None
    if self_col is not None:
        self_mass = p4.gather(-1, self_col.view(1, 1, c, 1).expand(kv, g, c, 1)).view(kv, g * c)
    if masks:
        assert mask_starts is not None
        masked = torch.stack(
            [(p4[..., m0 : m0 + m.shape[1]] * m).sum(-1).view(kv, g * c) for m, m0 in zip(masks, mask_starts)], -1
        )
    return first, self_mass, masked

"""Row-chunked streaming statistics in plain torch (the CPU default).

The idea: a chunk of query rows holds *complete* softmax rows, so every row statistic is
exact within the chunk and every column statistic is a sum over rows that can be
accumulated chunk by chunk, in one pass over the keys. Per batch element, a chunk takes c
query rows of all heads at once, grouped by kv head ([kv_head, group * c, d_head] against
the un-repeated keys [kv_head, key_pos, d_head]), so grouped-query attention never repeats k.
Memory is O(heads * c * key_pos) for the score tile; c is chosen so that the tile stays
around `TILE_BYTES`, which keeps it close to the CPU's last-level cache.

Inside a chunk (`tile_stats` in `_torch_tile.py`; s = scores, p = softmax; only keys that some row of the chunk can see are
computed, so a causal chunk of rows ending at key index a only touches keys 0..a):
- lse and top1 come from the row max m and its argmax: lse = m - log(max p);
- learned sink logits sigma (GPT-OSS) add exp(sigma) to each row's normaliser: the softmax
  over the keys is rescaled by exp(lse_keys - lse) with lse = logaddexp(lse_keys, sigma),
  one multiply over the tile, and every later statistic uses the rescaled p;
- entropy = lse - p . s (one batched dot); with a sink the row's mass mu = sum_j p_ij is
  below 1 and -sum p log p = mu lse - p . s;
- dist, sink and seg are p @ V with V = [a_ref - j, sink indicator, segment one-hots], one
  gemv per column (BLAS gemv beats a gemm this narrow); dist_i = mu_i (a_i - a_ref) + (p @ V)_0
  with a_ref the chunk's first row keeps the numbers small (mu_i = sum_j p_ij, 1 without a
  sink);
- waad = mu W - sum p_ij * max(W - (a_i - j), 0): only the last W keys of each row differ
  from W, so it is a product over a narrow diagonal band of the tile;
- first is the tile column of the first real token (0 when a sliding window cut it off),
  self_mass one gathered entry per row (its own key);
- recent_w is a product over the diagonal band 0 <= a_i - j < w of the tile, like waad;
  distant_w is its complement among the non-sink keys the row sees,
  distant_w = (mu - sink) - (recent_w - the sink keys' share of recent_w), so no window costs
  more than the band of width w + c (the sink keys are the first few tile columns); without
  a causal mask the keys after the query (a band above the diagonal) come off mu and sink;
- recv adds (real-row indicator) @ p, band adds the band-masked p, both over rows;
- with per-key weights w_j the same key sums run over p w_j, and each value-weighted share is
  one of them over sum_j p_ij w_j; w_recv adds p w_j / sum_j' p w_j' over real rows;
- target keys (A_{i, target[i]}) need only the final lse: after the chunks, one dot product
  per (row, target) gives s_it and A_it = exp(s_it - lse_i) (`_problem.target_stats`).
fp16/bf16 inputs are upcast (q per chunk, k once per batch element); everything accumulates
in float32 (float64 input: float64), column sums in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.kernels._problem import Problem, RawStats, target_stats
from interp.kernels._table import STATS, Stat, present
from interp.kernels._torch_tile import TileStats, tile_stats

__all__ = ["torch_stats", "tile_stats", "TileStats", "TILE_BYTES"]

TILE_BYTES = 16 * 2**20  # bytes of one [heads, c, keys] score tile; s and p make two of them
WINDOW_CHUNK_MIN = 64  # fewest rows per chunk of a sliding-window layer (fewer: per-chunk overhead dominates)


def torch_stats(
    problem: Problem,
    chunk_size: int | None = None,
    tile_fn: Callable[..., TileStats] = tile_stats,
) -> RawStats:
    """Streaming statistics of `problem`; see the module docstring for the algorithm.

    Args:
        chunk_size: query rows per chunk; None picks it so a score tile is ~TILE_BYTES.
        tile_fn: the per-chunk function (the benchmark passes a torch.compile'd one).
    """
    pb = problem
    cdtype = torch.float64 if pb.q.dtype == torch.float64 else torch.float32
    # Rows we stream over: all of them when column statistics need every row.
    work_rows = torch.arange(pb.query_pos) if pb.columns else pb.rows.cpu()
    rows_host = work_rows.tolist()
    acc = _Accumulator(pb, len(rows_host))
    first_real = pb.first_real.tolist()
    for b in range(pb.batch):
        # a padding mask with holes (not plain left padding) must be applied to every column
        holes = not bool(pb.key_real[b, first_real[b] :].all())
        kb = pb.k[b].to(cdtype)  # [kv, key_pos, d]: upcast once per batch element
        start = 0
        while start < len(rows_host):
            stop = min(start + (chunk_size or _auto_chunk(pb, rows_host, start, cdtype)), len(rows_host))
            chunk = _Chunk.plan(pb, b, first_real[b], work_rows[start:stop], rows_host[start:stop])
            if chunk is not None:
                inputs = _tile_inputs(pb, chunk, holes, pb.q[b], kb, cdtype)
                acc.add(chunk, slice(start, stop), tile_fn(**inputs), band_start=inputs["band_start"])
            start = stop
    raw = acc.result()
    if pb.targets is not None:  # target keys: one dot product per (row, target) against the rows' final lse
        raw["target"], raw["target_score"] = target_stats(pb, raw["lse"].nan_to_num(0.0))
    return raw


@dataclass(frozen=True)
class _Chunk:
    """Query rows `idx` of batch element b, at key indices `a`, and the keys [k0, k1) they see."""

    b: int
    first_real: int
    idx: Tensor  # [c] rows of q
    a: Tensor  # [c, 1] key index of each row
    a_min: int
    a_max: int
    k0: int
    k1: int

    @classmethod
    def plan(cls, pb: Problem, b: int, first_real: int, idx: Tensor, rows: list[int]) -> _Chunk | None:
        """None when no row of the chunk sees any key (they are all padded rows)."""
        a_min, a_max = pb.offset + min(rows), pb.offset + max(rows)
        # nothing before the first real token, nothing after the last row when causal,
        # nothing before the first row's sliding window
        k0 = first_real
        if pb.sliding_window is not None:
            k0 = max(k0, a_min - pb.sliding_window + 1)
        k1 = a_max + 1 if pb.causal else pb.key_pos
        if k1 <= k0:
            return None
        idx = idx.to(pb.q.device)
        return cls(b, first_real, idx, (pb.offset + idx)[:, None], a_min, a_max, k0, k1)


def _tile_inputs(pb: Problem, ch: _Chunk, holes: bool, qb: Tensor, kb: Tensor, cdtype: torch.dtype) -> dict:
    """The arguments of `tile_stats` for one chunk (all small next to the tile itself)."""
    c, lo, hi, window = ch.idx.numel(), pb.band[0], pb.band[1], pb.window
    j = torch.arange(ch.k0, ch.k1, device=ch.a.device)[None, :]  # [1, n_keys]
    qc = (qb.index_select(1, ch.idx).to(cdtype) * pb.scale).reshape(pb.kv_heads, pb.group * c, -1)
    kt = kb[:, ch.k0 : ch.k1].transpose(1, 2)
    vis, vis_start = _partial_visibility(pb, ch, holes)
    v = _row_rhs(pb, ch, j[0], cdtype)
    waad_start = max(ch.a_min - window + 1, ch.k0) - ch.k0
    waad_w = (window - (ch.a - j[:, waad_start:])).clamp(min=0).to(cdtype)
    band_w = row_w = None
    band_start = 0
    if pb.columns:
        row_w = pb.query_real()[ch.b, ch.idx].to(cdtype)
        b0, b1 = max(ch.a_min - hi, ch.k0), min(ch.a_max - lo + 1, ch.k1)
        if b1 > b0:
            band_start = b0 - ch.k0
            lag = ch.a - j[:, band_start : b1 - ch.k0]
            band_w = ((lag >= lo) & (lag <= hi)).to(cdtype) * row_w[:, None]
    sink = None
    if pb.sink_logits is not None:  # rows are [kv, group, c] flattened: one logit per head
        sink = pb.sink_logits.to(cdtype).view(pb.kv_heads, pb.group, 1).expand(-1, -1, c).reshape(pb.kv_heads, -1)
    n_keys = ch.k1 - ch.k0
    self_col = (ch.a[:, 0] - ch.k0).clamp(0, n_keys - 1)  # padded rows may sit left of the tile
    first_col = 0 if ch.k0 == ch.first_real else -1  # k0 > first_real: a window hides the first token
    masks, mask_starts = _window_masks(pb, ch, j, cdtype)
    key_weight = None
    if pb.key_weight is not None:  # [kv, g, 1, n_keys]: each head's weights, beside its rows
        key_weight = pb.key_weight[ch.b, :, ch.k0 : ch.k1].to(cdtype).view(pb.kv_heads, pb.group, 1, -1)
    return dict(
        qc=qc, kt=kt, softcap=pb.softcap, vis=vis, vis_start=vis_start, v=v, waad_w=waad_w,
        waad_start=waad_start, band_w=band_w, band_start=band_start, row_w=row_w, sink=sink,
        self_col=self_col, first_col=first_col, masks=masks, mask_starts=mask_starts, key_weight=key_weight,
    )  # fmt: skip


def _window_masks(pb: Problem, ch: _Chunk, j: Tensor, cdtype: torch.dtype) -> tuple[list[Tensor], list[int]]:
    """The bands whose row sums give recent / distant (see `_Accumulator.add`), as (masks, starts).

    Per window w: the band 0 <= a_i - j < w (recent_w), then the same band on the sink
    columns only; without a causal mask two more: the keys after the query (a_i - j < 0),
    on all columns and on the sink columns. Empty without recent_windows.
    """
    if not pb.recent_windows:
        return [], []
    a, k0 = ch.a, ch.k0
    sink_stop = max(min(ch.first_real + pb.sink_tokens, ch.k1) - k0, 0)  # sink tokens: tile columns [0, sink_stop)
    lag_sink = a - j[:, :sink_stop]
    recent, recent_sink, starts = [], [], []
    for w in pb.recent_windows:
        r0 = max(ch.a_min - w + 1, k0) - k0
        r1 = max(min(ch.a_max + 1, ch.k1) - k0, r0)  # no row's band reaches past the last row
        lag = a - j[:, r0:r1]
        recent.append(((lag >= 0) & (lag < w)).to(cdtype))
        starts.append(r0)
        recent_sink.append(((lag_sink >= 0) & (lag_sink < w)).to(cdtype))
    masks, mask_starts = recent + recent_sink, starts + [0] * len(recent_sink)
    if not pb.causal:
        f0 = min(max(ch.a_min + 1, k0), ch.k1) - k0  # padded rows may sit left of the tile
        masks += [(a - j[:, f0:] < 0).to(cdtype), (lag_sink < 0).to(cdtype)]
        mask_starts += [f0, 0]
    return masks, mask_starts


class _Accumulator:
    """Output buffers: row statistics by chunk, column sums added up over chunks."""

    def __init__(self, pb: Problem, n_rows: int, table: tuple[Stat, ...] = STATS) -> None:
        self.pb = pb
        dev = pb.q.device
        extra = {"row": (), "segment": (pb.n_segments,), "window": (len(pb.recent_windows),)}
        # one buffer per row-like statistic of the table, holding its fill value until a chunk writes it
        self.rows = {
            s.name: torch.full((pb.batch, pb.heads, n_rows, *extra[s.shape]), s.fill, dtype=s.dtype, device=dev)
            for s in table
            if s.shape in extra and present(s, pb)
        }
        sums = {s.source for s in table if s.shape == "column" and present(s, pb)}  # recv, band, w_recv
        self.cols = {
            name: torch.zeros(pb.batch, pb.heads, pb.key_pos, dtype=torch.float64, device=dev) for name in sums
        }

    def add(self, ch: _Chunk, rows: slice, out: TileStats, band_start: int) -> None:
        heads, c, b, window = self.pb.heads, ch.idx.numel(), ch.b, self.pb.window

        def put(x: Tensor) -> Tensor:  # [kv, g*c, ...] -> [head, c, ...]
            return x.reshape(heads, c, *x.shape[2:])

        mu = 1.0 if out.mass is None else put(out.mass)  # the keys' share of the row (the sink has the rest)
        value = {
            "lse": put(out.lse),
            "top1": put(out.top1) + ch.k0,
            "top1p": put(out.top1p),
            "entropy": put(out.entropy),
            "sink": put(out.rowdot[..., 1]),
            "dist": put(out.rowdot[..., 0]) + mu * (ch.a[:, 0] - ch.a_min),
            "waad": mu * window - put(out.waad_part),
            "first": put(out.first),
            "self_mass": put(out.self_mass),
        }
        if "seg" in self.rows:
            value["seg"] = put(out.rowdot[..., 2:])
        if "recent" in self.rows:
            value["recent"], value["distant"] = self._windows(mu, put(out.rowdot[..., 1]), put(out.masked))
        if out.w_total is not None:  # shares of sum_j p_ij w_j (0 / 0 = NaN on rows without weighted mass)
            total, w_sink = put(out.w_total), put(out.w_sink)
            value |= {"w_sink": w_sink / total, "w_first": put(out.w_first) / total}
            value["w_self_mass"] = put(out.w_self_mass) / total
            if "w_recent" in self.rows:
                recent, distant = self._windows(total, w_sink, put(out.w_masked))
                value |= {"w_recent": recent / total[..., None], "w_distant": distant / total[..., None]}
        for name, buf in self.rows.items():
            buf[b, :, rows] = value[name].to(buf.dtype)
        if out.recv is not None:
            self.cols["recv"][b, :, ch.k0 : ch.k1] += out.recv.reshape(heads, -1)
        if out.band is not None:
            b0 = ch.k0 + band_start
            self.cols["band"][b, :, b0 : b0 + out.band.shape[-1]] += out.band.reshape(heads, -1)
        if out.w_recv is not None:
            self.cols["w_recv"][b, :, ch.k0 : ch.k1] += out.w_recv.reshape(heads, -1)

    def _windows(self, mu: Tensor | float, sink: Tensor, sums: Tensor) -> tuple[Tensor, Tensor]:
        """(recent, distant) [head, c, n_windows] from the masked row sums (see _window_masks)."""
        n = len(self.pb.recent_windows)
        recent, recent_sink = sums[..., :n], sums[..., n : 2 * n]
        # the non-sink keys at or before the query: mu - sink, less the keys after it
        # when there is no causal mask
        past = mu - sink
        if not self.pb.causal:
            past = past - (sums[..., 2 * n] - sums[..., 2 * n + 1])
        return recent, past[..., None] - (recent - recent_sink)

    def result(self) -> RawStats:
        rows = self.rows
        if self.pb.columns:  # we streamed over all rows; keep the requested ones
            rows = {name: t[:, :, self.pb.rows] for name, t in rows.items()}
        return {**rows, **self.cols}


def _auto_chunk(pb: Problem, rows: list[int], start: int, cdtype: torch.dtype) -> int:
    """Rows per chunk, starting at rows[start], so that a [heads, c, n_keys] tile holds about TILE_BYTES.

    A causal chunk starting at key index a0 spans about a0 + 1 + c keys, so early chunks
    can take more rows: solve heads * bytes * c * (width0 + c) = TILE_BYTES for c.
    A causal sliding-window chunk of consecutive rows spans W + c - 1 keys whatever its
    position, of which c * (c - 1) are masked (the triangles before the first row's window
    and after the last row), so it takes c = W / 4 rows (at least WINDOW_CHUNK_MIN): a
    fifth of the tile is wasted and the tile stays small (measured in benchmarks/RESULTS.md).
    """
    per_key = pb.heads * torch.finfo(cdtype).bits // 8
    budget = TILE_BYTES / per_key

    def fit(width0: int) -> int:  # c with c * (width0 + c) = budget
        return max(1, int((-width0 + math.sqrt(width0 * width0 + 4 * budget)) / 2))

    if pb.causal and pb.sliding_window is not None:
        c = min(fit(pb.sliding_window), max(WINDOW_CHUNK_MIN, pb.sliding_window // 4))
        chunk = rows[start : start + c]
        if max(chunk) - min(chunk) < len(chunk):  # consecutive rows (as when streaming all of them)
            return c
    if not (pb.causal and pb.columns):  # rows may be anywhere: assume full-width rows
        return max(1, int(budget / pb.key_pos))
    width0 = min(pb.key_pos, pb.offset + rows[start] + 1)
    if pb.sliding_window is not None:
        width0 = min(width0, pb.sliding_window)
    return fit(width0)


def _partial_visibility(pb: Problem, ch: _Chunk, holes: bool) -> tuple[Tensor, int]:
    """Visibility of the only tile columns that some row of the chunk cannot see.

    Causal: keys after the first row's position, [a_min + 1, k1). Sliding window: keys
    before the last row's window, [k0, a_max - window + 1). Left padding is already cut off
    by k0; a padding mask with holes needs every column.

    Returns:
        (vis [c, n_vis] bool, first tile column of vis).
    """
    a, k0, k1 = ch.a, ch.k0, ch.k1
    lo, hi = k1, k0  # empty span
    if pb.causal:
        lo, hi = min(lo, ch.a_min + 1), max(hi, k1)
    if pb.sliding_window is not None:
        lo, hi = min(lo, k0), max(hi, min(k1, ch.a_max - pb.sliding_window + 1))
    if holes:
        lo, hi = k0, k1
    lo = max(lo, k0)
    if hi <= lo:
        return torch.ones(a.shape[0], 0, dtype=torch.bool, device=a.device), 0
    j = torch.arange(lo, hi, device=a.device)[None, :]
    vis = pb.key_real[ch.b, lo:hi][None, :] if holes else torch.ones_like(j, dtype=torch.bool)
    if pb.causal:
        vis = vis & (j <= a)
    if pb.sliding_window is not None:
        vis = vis & (j > a - pb.sliding_window)
    return vis.expand(a.shape[0], -1), lo - k0  # [c, n_vis] also when only the mask has holes


def _row_rhs(pb: Problem, ch: _Chunk, j: Tensor, cdtype: torch.dtype) -> Tensor:
    """V^T = [a_min - j, j is a sink key, segment one-hots]: [2 + n_segments, n_keys]."""
    v = torch.zeros(2 + pb.n_segments, j.shape[0], dtype=cdtype, device=j.device)
    v[0] = ch.a_min - j
    v[1] = j < ch.first_real + pb.sink_tokens
    if pb.segments is not None:
        labels = pb.segments[ch.b, j]
        hit = labels >= 0
        v[2 + labels[hit], hit.nonzero()[:, 0]] = 1.0
    return v

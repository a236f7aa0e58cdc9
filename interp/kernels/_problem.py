"""Validated, normalised inputs of one `attention_stats` call, and what a backend returns.

`prepare` turns the user's arguments into a `Problem` (every check that can fail happens
here, with an `InterpError` that says what to do), so the backends can assume clean input.
The streaming backends return `RawStats`, a dict keyed by the statistics table
(`_table.py`): row statistics for the requested rows and the column *sums*; `finalize` (in
`stats.py`) divides the sums by the query counts computed here and writes each statistic's
fill value where it is undefined. The float64 reference computes everything
itself, as an independent check of that bookkeeping.

Index conventions used everywhere in `interp.kernels`:
- query row r of q sits at key index `a_r = key_pos - query_pos + r` (end-aligned, KV cache);
- under padding, the position of key index j is `j - first_real` where `first_real` is the
  index of the batch element's first real token; only differences of positions (which equal
  differences of indices) and the sink range `[first_real, first_real + sink_tokens)` matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.errors import InterpError

__all__ = ["Problem", "RawStats", "prepare", "column_counts", "target_stats"]

BACKENDS = ("auto", "reference", "torch", "triton")


@dataclass(frozen=True)
class Problem:
    """Clean inputs. Shapes: q [batch, head, query_pos, d_head], k [batch, kv_head, key_pos, d_head]."""

    q: Tensor
    k: Tensor
    scale: float
    causal: bool
    softcap: float | None  # s = softcap * tanh(s / softcap) before masking (Gemma 2)
    sliding_window: int | None  # query a sees keys j with a - sliding_window < j
    sink_logits: Tensor | None  # [head] float64 learned sink logit sigma_h (GPT-OSS), or None
    sink_tokens: int
    window: int  # W of waad
    band: tuple[int, int]
    segments: Tensor | None  # [batch, key_pos] int64, -1 = no segment
    n_segments: int
    key_real: Tensor  # [batch, key_pos] bool, True = real token
    first_real: Tensor  # [batch] int64, index of the first real token (key_pos if none)
    rows: Tensor  # [n_rows] int64, indices into q's query_pos for the row statistics
    columns: bool
    padded: bool  # whether any key is padding
    # [batch, n_rows, n_targets] int64 expected key index per requested row, -1 = none; or None
    targets: Tensor | None = None
    targets_2d: bool = False  # the user passed [batch, n_rows]: return [batch, head, n_rows]
    recent_windows: tuple[int, ...] = ()  # w of recent / distant, distinct ints >= 1
    # [batch, head, key_pos] float64 non-negative weight w_j of each key for each query head
    # (kv-head weights already repeated over their group), or None: no w_* statistics
    key_weight: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    @property
    def heads(self) -> int:
        return self.q.shape[1]

    @property
    def kv_heads(self) -> int:
        return self.k.shape[1]

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    @property
    def query_pos(self) -> int:
        return self.q.shape[2]

    @property
    def key_pos(self) -> int:
        return self.k.shape[2]

    @property
    def offset(self) -> int:
        """Key index of query row 0."""
        return self.key_pos - self.query_pos

    def query_real(self) -> Tensor:
        """[batch, query_pos] bool: whether each query row is a real token."""
        return self.key_real[:, self.offset :]

    def target_visible(self) -> Tensor:
        """[batch, n_rows, n_targets] bool: the target key exists and the row may see it."""
        assert self.targets is not None
        t = self.targets
        a = (self.offset + self.rows)[None, :, None]
        ok = (t >= 0) & self.key_real.gather(1, t.clamp(min=0).flatten(1)).view_as(t)
        if self.causal:
            ok &= t <= a
        if self.sliding_window is not None:
            ok &= t > a - self.sliding_window
        return ok


RawStats = dict[str, Tensor]
"""What a streaming backend returns; `finalize` (stats.py) turns it into `AttentionStats`.

Keys are the `Stat.source` names of `_table.STATS` that the problem asks for (`_table.raw_names`),
no more, no less. Row-like values are [batch, head, n_rows, ...] for `Problem.rows` (values of
padded rows are ignored); column values are [batch, head, key_pos] *sums* over the real queries
(the finaliser divides the ones whose reduction is a mean).
"""


def column_counts(problem: Problem) -> tuple[Tensor, Tensor]:
    """Number of real queries that each key's column statistics average over.

    A query may see key j when the masks allow it: a_i >= j when causal, a_i - j <
    sliding_window in a sliding-window layer. Only those queries enter a key's mean.

    Returns:
        (recv_count, band_count), both [batch, key_pos] int64: recv_count_j counts real
        queries that may see key j; band_count_j counts those among them with
        lo <= a_i - j <= hi.
    """
    real = problem.query_real().to(torch.int64)  # [batch, query_pos]
    # below[b, x] = number of real queries with key index a_i < x, for x = 0..key_pos
    below = torch.zeros(problem.batch, problem.key_pos + 1, dtype=torch.int64, device=real.device)
    below[:, problem.offset + 1 :] = real.cumsum(1)

    def between(lag_lo: int | None, lag_hi: int | None) -> Tensor:
        """Real queries with lag_lo <= a_i - j <= lag_hi (None: unbounded), per key j."""
        j = torch.arange(problem.key_pos, device=real.device).expand(problem.batch, -1)
        first = (j + lag_lo).clamp(0, problem.key_pos) if lag_lo is not None else torch.zeros_like(j)
        stop = (j + lag_hi + 1).clamp(0, problem.key_pos) if lag_hi is not None else torch.full_like(j, problem.key_pos)
        return (below.gather(1, stop) - below.gather(1, first)).clamp_min(0)

    # the lags a_i - j a query may have and still see key j
    see_lo = 0 if problem.causal else None
    see_hi = problem.sliding_window - 1 if problem.sliding_window is not None else None
    lo, hi = problem.band
    band_lo = lo if see_lo is None else max(lo, see_lo)
    band_hi = hi if see_hi is None else min(hi, see_hi)
    return between(see_lo, see_hi), between(band_lo, band_hi)


def prepare(
    q: Tensor,
    k: Tensor,
    *,
    scale: float,
    causal: bool,
    softcap: float | None,
    sliding_window: int | None,
    sink_tokens: int,
    sink_logits: Tensor | None = None,
    window: int,
    band: tuple[int, int],
    segments: Tensor | None,
    n_segments: int | None,
    key_padding_mask: Tensor | None,
    query_rows: Tensor | Sequence[int] | None,
    columns: bool,
    targets: Tensor | None = None,
    recent_windows: Sequence[int] = (),
    key_weight: Tensor | None = None,
) -> Problem:
    """Check every argument of `attention_stats` and normalise it. Raises InterpError."""
    _check_qk(q, k)
    batch, heads, query_pos, _ = q.shape
    key_pos = k.shape[2]
    device = q.device
    if not (isinstance(scale, (int, float)) and scale > 0 and scale != float("inf")):
        raise InterpError(f"scale must be a positive finite number (1/sqrt(d_head) for Llama), got {scale!r}")
    if softcap is not None and not (isinstance(softcap, (int, float)) and softcap > 0):
        raise InterpError(f"softcap must be None or a positive number (Gemma 2 uses 50.0), got {softcap!r}")
    if sliding_window is not None and not (_is_int(sliding_window) and sliding_window >= 1):
        raise InterpError(f"sliding_window must be None or an int >= 1, got {sliding_window!r}")
    if not (_is_int(sink_tokens) and 0 <= sink_tokens <= key_pos):
        raise InterpError(f"sink_tokens must be an int in 0..key_pos={key_pos}, got {sink_tokens!r}")
    if not (_is_int(window) and window >= 1):
        raise InterpError(f"window (W of waad) must be an int >= 1, got {window!r}")
    if not (isinstance(band, (tuple, list)) and len(band) == 2 and all(_is_int(x) for x in band)):
        raise InterpError(f"band must be a pair of ints (lo, hi), got {band!r}")
    lo, hi = int(band[0]), int(band[1])
    if lo > hi:
        raise InterpError(f"band lo={lo} > hi={hi}: pass (lo, hi) with lo <= hi, e.g. (10, 100)")
    windows = _recent_windows(recent_windows)

    sinks = _sink_logits(sink_logits, heads, device)
    weights = _key_weight(key_weight, batch, heads, k.shape[1], key_pos, device)
    key_real = _key_real(key_padding_mask, batch, key_pos, device)
    has_real = key_real.any(1)
    first_real = torch.where(has_real, key_real.to(torch.int8).argmax(1), key_pos).to(torch.int64)
    segs, n_seg = _segments(segments, n_segments, batch, key_pos, device)
    rows = _rows(query_rows, query_pos, device)
    tgt = _targets(targets, batch, rows.numel(), key_pos, device)
    return Problem(
        q=q,
        k=k,
        scale=float(scale),
        causal=bool(causal),
        softcap=None if softcap is None else float(softcap),
        sliding_window=None if sliding_window is None else int(sliding_window),
        sink_logits=sinks,
        sink_tokens=int(sink_tokens),
        window=int(window),
        band=(lo, hi),
        segments=segs,
        n_segments=n_seg,
        key_real=key_real,
        first_real=first_real,
        rows=rows,
        columns=bool(columns),
        padded=key_padding_mask is not None and not bool(key_real.all()),
        targets=tgt,
        targets_2d=targets is not None and targets.ndim == 2,
        recent_windows=windows,
        key_weight=weights,
    )


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _recent_windows(windows: Sequence[int]) -> tuple[int, ...]:
    """The windows w of `recent` / `distant` as a tuple of distinct ints >= 1."""
    if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence):
        raise InterpError(f"recent_windows must be a sequence of ints >= 1, e.g. (16, 128), got {windows!r}")
    if not all(_is_int(w) and w >= 1 for w in windows):
        raise InterpError(f"recent_windows must hold ints >= 1 (positions back from the query), got {list(windows)}")
    if len(set(windows)) != len(windows):
        raise InterpError(f"recent_windows must be distinct, got {list(windows)}")
    return tuple(int(w) for w in windows)


def _check_qk(q: Tensor, k: Tensor) -> None:
    for name, t, axes in (("q", q, "[batch, head, query_pos, d_head]"), ("k", k, "[batch, kv_head, key_pos, d_head]")):
        if not isinstance(t, Tensor) or t.ndim != 4:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise InterpError(f"{name} must be a 4-d tensor {axes}, got {got}")
        if not t.is_floating_point():
            raise InterpError(f"{name} must be a floating tensor, got {t.dtype}")
    if q.dtype != k.dtype or q.device != k.device:
        raise InterpError(
            f"q and k must share dtype and device, got q {q.dtype} on {q.device}, k {k.dtype} on {k.device}"
        )
    (bq, h, nq, dq), (bk, kvh, nk, dk) = q.shape, k.shape
    if bq != bk or dq != dk:
        raise InterpError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or d_head; "
            "q is [batch, head, query_pos, d_head] and k is [batch, kv_head, key_pos, d_head]"
        )
    if kvh == 0 or h % kvh != 0:
        raise InterpError(f"head={h} is not a multiple of kv_head={kvh}: pass k un-repeated, one slice per kv head")
    if nq == 0 or nk == 0 or nq > nk:
        raise InterpError(
            f"need 1 <= query_pos <= key_pos, got query_pos={nq}, key_pos={nk} "
            "(queries are the last query_pos positions of the key sequence)"
        )
    for name, t in (("q", q), ("k", k)):
        if not bool(torch.isfinite(torch.stack([t.amax(), t.amin()])).all()):  # NaN propagates
            raise InterpError(f"{name} contains NaN or inf: check the captured activations (overflow in fp16?)")


def _sink_logits(sink_logits: Tensor | None, heads: int, device: torch.device) -> Tensor | None:
    """[head] float64 on `device` (an exact upcast of any float dtype), or None."""
    if sink_logits is None:
        return None
    if not isinstance(sink_logits, Tensor) or tuple(sink_logits.shape) != (heads,):
        got = tuple(sink_logits.shape) if isinstance(sink_logits, Tensor) else type(sink_logits).__name__
        raise InterpError(
            f"sink_logits must be a tensor [head] = ({heads},), one logit per query head "
            f"(GPT-OSS: the attention module's `sinks`), got {got}"
        )
    if not sink_logits.is_floating_point():
        raise InterpError(f"sink_logits must be a floating tensor, got {sink_logits.dtype}")
    if not bool(torch.isfinite(sink_logits).all()):
        raise InterpError("sink_logits contains NaN or inf: pass finite logits, or sink_logits=None for no sink")
    return sink_logits.detach().to(device=device, dtype=torch.float64)


def _key_weight(
    weight: Tensor | None, batch: int, heads: int, kv_heads: int, key_pos: int, device: torch.device
) -> Tensor | None:
    """[batch, head, key_pos] float64 on `device` (kv-head weights repeated over their group), or None."""
    if weight is None:
        return None
    shapes = {(batch, kv_heads, key_pos), (batch, heads, key_pos)}
    if not isinstance(weight, Tensor) or tuple(weight.shape) not in shapes:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise InterpError(
            f"key_weight must be a tensor [batch, kv_head or head, key_pos] = ({batch}, {kv_heads} or {heads}, "
            f"{key_pos}), one weight per key (e.g. ||v_j|| per kv head, ||W_O^h v_j|| per head), got {got}"
        )
    if not weight.is_floating_point():
        raise InterpError(f"key_weight must be a floating tensor, got {weight.dtype}")
    weight = weight.detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(weight).all()):
        raise InterpError("key_weight contains NaN or inf: pass finite weights (norms of the value vectors)")
    if bool((weight < 0).any()):
        raise InterpError(
            f"key_weight must be non-negative (a norm such as ||v_j||), got a minimum of {float(weight.min()):.4g}"
        )
    return weight.repeat_interleave(heads // weight.shape[1], dim=1)  # head h reads kv head h // group


def _key_real(mask: Tensor | None, batch: int, key_pos: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(batch, key_pos, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch, key_pos):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise InterpError(f"key_padding_mask must be [batch, key_pos] = {(batch, key_pos)}, got {got}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise InterpError("key_padding_mask must be bool or 0/1 integers (HF attention_mask), True/1 = real token")
        mask = mask != 0
    return mask.to(device)


def _segments(
    segments: Tensor | None, n_segments: int | None, batch: int, key_pos: int, device: torch.device
) -> tuple[Tensor | None, int]:
    if segments is None:
        if n_segments is not None:
            raise InterpError("n_segments was given without segments: pass segments [batch, key_pos] too")
        return None, 0
    if not isinstance(segments, Tensor) or tuple(segments.shape) != (batch, key_pos):
        got = tuple(segments.shape) if isinstance(segments, Tensor) else type(segments).__name__
        raise InterpError(f"segments must be a LongTensor [batch, key_pos] = {(batch, key_pos)}, got {got}")
    if segments.is_floating_point() or segments.dtype == torch.bool:
        raise InterpError(f"segments must hold integer labels (-1 = none, 0..C-1), got {segments.dtype}")
    segments = segments.to(device=device, dtype=torch.int64)
    top = int(segments.max()) + 1
    if int(segments.min()) < -1:
        raise InterpError("segments labels must be -1 (no segment) or 0..n_segments-1")
    if n_segments is None:
        n_segments = top
    if not (_is_int(n_segments) and n_segments >= top and n_segments >= 0):
        raise InterpError(
            f"n_segments={n_segments!r} but segments holds labels up to {top - 1}: pass n_segments >= {top}"
        )
    return segments, int(n_segments)


def _rows(query_rows: Tensor | Sequence[int] | None, query_pos: int, device: torch.device) -> Tensor:
    if query_rows is None:
        return torch.arange(query_pos, device=device)
    rows = torch.as_tensor(query_rows, device=device)
    if rows.ndim != 1 or rows.is_floating_point() or rows.dtype == torch.bool:
        raise InterpError(f"query_rows must be a 1-d LongTensor of row indices, got {rows.dtype} {tuple(rows.shape)}")
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= query_pos):
        raise InterpError(
            f"query_rows out of range: q has query_pos={query_pos} rows (0-{query_pos - 1}), "
            f"got values {int(rows.min())}..{int(rows.max())}"
        )
    return rows.to(torch.int64)


def _targets(targets: Tensor | None, batch: int, n_rows: int, key_pos: int, device: torch.device) -> Tensor | None:
    """[batch, n_rows, n_targets] int64 on `device`, or None."""
    if targets is None:
        return None
    if not isinstance(targets, Tensor) or targets.ndim not in (2, 3) or tuple(targets.shape[:2]) != (batch, n_rows):
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise InterpError(
            f"targets must be a LongTensor [batch, n_rows] or [batch, n_rows, n_targets] with batch={batch} and "
            f"n_rows={n_rows} (one entry per requested query row), got {got}"
        )
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise InterpError(f"targets must hold integer key indices (-1 = none), got {targets.dtype}")
    t = targets.to(device=device, dtype=torch.int64)
    if t.ndim == 2:
        t = t[..., None]
    if t.numel() and (int(t.min()) < -1 or int(t.max()) >= key_pos):
        raise InterpError(
            f"targets out of range: key indices must be -1 (no target) or 0..{key_pos - 1}, "
            f"got values {int(t.min())}..{int(t.max())}"
        )
    return t.contiguous()


def target_stats(problem: Problem, lse: Tensor) -> tuple[Tensor, Tensor]:
    """The target-key statistics from the rows' final lse, by direct dot products (no tile).

    s_it = scale * q_i . k_t (soft-capped), A_it = exp(s_it - lse_i) where row i may see t, else 0.
    Gathers one key per (row, target), grouped by kv head, so GQA keys are never repeated.

    Args:
        lse: [batch, head, n_rows] the requested rows' normalisers (sink included).

    Returns:
        (mass, score), [batch, head, n_rows, n_targets] in the compute dtype (float32, or
        float64 for float64 input); NaN where the target is -1.
    """
    pb = problem
    assert pb.targets is not None
    cdtype = torch.float64 if pb.q.dtype == torch.float64 else torch.float32
    n_rows, n_tgt = pb.targets.shape[1], pb.targets.shape[2]
    t = pb.targets.clamp(min=0)
    mass = torch.empty(pb.batch, pb.heads, n_rows, n_tgt, dtype=cdtype, device=pb.q.device)
    score = torch.empty_like(mass)
    for b in range(pb.batch):
        q = pb.q[b][:, pb.rows].to(cdtype).view(pb.kv_heads, pb.group, n_rows, -1)  # [kv, g, r, d]
        k = pb.k[b][:, t[b].flatten()].to(cdtype).view(pb.kv_heads, n_rows, n_tgt, -1)  # [kv, r, n, d]
        s = torch.einsum("kgrd,krnd->kgrn", q, k).reshape(pb.heads, n_rows, n_tgt) * pb.scale
        if pb.softcap is not None:
            s = torch.tanh(s / pb.softcap) * pb.softcap
        score[b] = s
        mass[b] = torch.exp(s - lse[b].to(cdtype)[..., None])
    vis = pb.target_visible()[:, None]
    mass = mass.masked_fill(~vis, 0.0)
    none = (pb.targets < 0)[:, None]
    return mass.masked_fill(none, float("nan")), score.masked_fill(none, float("nan"))

"""The float64 reference: materialise the full attention matrix and apply docs/METRICS.md literally.

This is the definition the fast backends are tested against, so it is written for the reader,
not for speed: every statistic is one line over the dense A [batch, head, query_pos, key_pos]
(memory O(T^2) per head; for tests and small inputs only). It shares nothing with the
streaming backends beyond the validated `Problem`, including the query counts and the NaN
conventions, which it derives again from the masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels._problem import Problem
from interp.kernels._table import STATS

__all__ = ["reference_probs", "reference_stats"]


def reference_probs(problem: Problem, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Scores and attention of every query row, computed in `dtype`.

    Returns:
        (s, A), both [batch, head, query_pos, key_pos]: s is the masked score (-inf where
        key j is invisible to query i), A the softmax over visible keys, with A = 0 on
        invisible keys and on padded query rows. With sink logits the softmax runs over
        [s_i, sigma_h] and the sink column is dropped (HF's GPT-OSS eager attention).
    """
    q = problem.q.to(dtype)
    k = problem.k.to(dtype).repeat_interleave(problem.group, dim=1)  # HF repeat_kv order
    s = (q @ k.transpose(-1, -2)) * problem.scale
    if problem.softcap is not None:
        s = problem.softcap * torch.tanh(s / problem.softcap)
    visible = _visible(problem)[:, None]  # [batch, 1, query_pos, key_pos]
    s = s.masked_fill(~visible, float("-inf"))
    if problem.sink_logits is None:
        a = torch.softmax(s, dim=-1).nan_to_num(0.0)  # rows with no visible key give 0/0
    else:
        sink = problem.sink_logits.to(dtype)[None, :, None, None].expand(*s.shape[:-1], 1)
        a = torch.softmax(torch.cat([s, sink], dim=-1), dim=-1)[..., :-1]
    a = a * problem.query_real()[:, None, :, None]
    return s, a


def reference_stats(problem: Problem, dtype: torch.dtype = torch.float64) -> dict[str, Tensor | None]:
    """All statistics of `AttentionStats` (row stats for `problem.rows`), in `dtype`."""
    s, a = reference_probs(problem, dtype)
    rows = problem.rows
    a_pos = (problem.offset + torch.arange(problem.query_pos, device=s.device))[:, None]  # a_i
    j = torch.arange(problem.key_pos, device=s.device)[None, :]
    lag = (a_pos - j).to(dtype)  # a_i - j = position difference, padding or not

    ar, sr, lagr = a[:, :, rows], s[:, :, rows], lag[rows]
    top1p, top1 = ar.max(dim=-1)
    sink_keys = j < (problem.first_real[:, None] + problem.sink_tokens)  # [batch, key_pos]
    out: dict[str, Tensor | None] = {
        "lse": _lse(problem, sr),
        "top1": top1,
        "top1p": top1p,
        "entropy": torch.special.entr(ar).sum(-1),  # -sum A log A over keys (not the sink), 0 log 0 = 0
        "dist": (ar * lagr).sum(-1),
        "waad": (ar * lagr.clamp(max=problem.window)).sum(-1),
        "seg": None,
        **_key_sums(problem, ar, lagr, sink_keys),
    }
    # value-weighted shares: the same sums over u_ij = A_ij w_j / sum_j' A_ij' w_j' (0 / 0 = NaN)
    u = None
    out |= {f"w_{name}": None for name in ("sink", "first", "self_mass", "recent", "distant")}
    if problem.key_weight is not None:
        u = a * problem.key_weight.to(dtype)[:, :, None, :]
        u = u / u.sum(-1, keepdim=True)
        out |= {f"w_{name}": x for name, x in _key_sums(problem, u[:, :, rows], lagr, sink_keys).items()}
    if problem.segments is not None:
        onehot = torch.nn.functional.one_hot(problem.segments + 1, problem.n_segments + 1)[..., 1:]
        out["seg"] = torch.einsum("bhik,bkc->bhic", ar, onehot.to(dtype))
    row_real = problem.query_real()[:, rows][:, None, :]
    for stat in STATS:  # each row-like statistic's fill value on padded query rows
        if stat.shape in ("row", "segment", "window") and out[stat.name] is not None:
            pad = ~row_real if stat.shape == "row" else ~row_real[..., None]
            out[stat.name] = out[stat.name].masked_fill(pad, stat.fill)

    out.update(target=None, target_score=None)
    if problem.targets is not None:
        out["target"], out["target_score"] = _target(problem, ar, row_real, dtype)

    out.update(recv=None, recv_mean=None, band=None, w_recv=None)
    if problem.columns:
        # the real queries that may see key j: the masks of `_visible` without the key's own
        # padding (a padded key's column is NaN anyway), derived again from the lags
        sees = problem.query_real()[:, :, None].expand(-1, -1, problem.key_pos)  # [batch, query_pos, key_pos]
        if problem.causal:
            sees = sees & (lag >= 0)
        if problem.sliding_window is not None:
            sees = sees & (lag < problem.sliding_window)
        lo, hi = problem.band
        in_band = sees & (lag >= lo) & (lag <= hi)
        recv = a.sum(dim=-2)
        band_sum = (a * in_band[:, None]).sum(dim=-2)
        key_pad = ~problem.key_real[:, None, :]
        out["recv"] = recv.masked_fill(key_pad, float("nan"))
        out["recv_mean"] = (recv / sees.sum(1)[:, None].to(dtype)).masked_fill(key_pad, float("nan"))
        out["band"] = (band_sum / in_band.sum(1)[:, None].to(dtype)).masked_fill(key_pad, float("nan"))
        if u is not None:  # rows with no weighted mass (padded, or every visible w_j = 0) add nothing
            out["w_recv"] = u.nan_to_num(0.0).sum(dim=-2).masked_fill(key_pad, float("nan"))
    return out


def _key_sums(problem: Problem, ar: Tensor, lagr: Tensor, sink_keys: Tensor) -> dict[str, Tensor | None]:
    """sink, first, self_mass, recent and distant: sums of ar [batch, head, n_rows, key_pos] over key sets."""
    j = torch.arange(problem.key_pos, device=ar.device)[None, :]
    out: dict[str, Tensor | None] = {
        "sink": (ar * sink_keys[:, None, None, :]).sum(-1),
        "first": (ar * (j == problem.first_real[:, None])[:, None, None, :]).sum(-1),  # the first real token
        "self_mass": (ar * (lagr == 0)).sum(-1),  # the query's own key
        "recent": None,
        "distant": None,
    }
    if problem.recent_windows:
        ws = torch.tensor(problem.recent_windows, dtype=ar.dtype, device=ar.device)[:, None, None]  # [n_win, 1, 1]
        recent = (lagr >= 0) & (lagr < ws)  # [n_win, n_rows, key_pos]
        distant = (lagr >= ws)[None] & ~sink_keys[:, None, None, :]  # [batch, n_win, n_rows, key_pos]
        out["recent"] = torch.einsum("bhik,wik->bhiw", ar, recent.to(ar.dtype))
        out["distant"] = torch.einsum("bhik,bwik->bhiw", ar, distant.to(ar.dtype))
    return out


def _target(problem: Problem, a_rows: Tensor, row_real: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A_{i, target} gathered from the dense attention; s_{i, target} from the dense unmasked scores."""
    q = problem.q.to(dtype)[:, :, problem.rows]
    k = problem.k.to(dtype).repeat_interleave(problem.group, dim=1)
    s = (q @ k.transpose(-1, -2)) * problem.scale  # [batch, head, n_rows, key_pos], no mask
    if problem.softcap is not None:
        s = problem.softcap * torch.tanh(s / problem.softcap)
    idx = problem.targets.clamp(min=0)[:, None].expand(-1, problem.heads, -1, -1)
    mass, score = a_rows.gather(-1, idx), s.gather(-1, idx)
    undefined = (problem.targets < 0)[:, None] | ~row_real[..., None]
    mass, score = mass.masked_fill(undefined, float("nan")), score.masked_fill(undefined, float("nan"))
    if problem.targets_2d:
        mass, score = mass[..., 0], score[..., 0]
    return mass, score


def _lse(problem: Problem, s: Tensor) -> Tensor:
    """log sum_j exp(s_ij), with exp(sigma_h) added inside the log when there are sink logits."""
    lse = torch.logsumexp(s, dim=-1)
    if problem.sink_logits is None:
        return lse
    return torch.logaddexp(lse, problem.sink_logits.to(s.dtype)[None, :, None])


def _visible(problem: Problem) -> Tensor:
    """[batch, query_pos, key_pos] bool: key j is visible to query row i."""
    device = problem.q.device
    a_pos = (problem.offset + torch.arange(problem.query_pos, device=device))[:, None]
    j = torch.arange(problem.key_pos, device=device)[None, :]
    visible = torch.ones(problem.query_pos, problem.key_pos, dtype=torch.bool, device=device)
    if problem.causal:
        visible &= j <= a_pos
    if problem.sliding_window is not None:
        visible &= j > a_pos - problem.sliding_window
    return visible[None] & problem.key_real[:, None, :]

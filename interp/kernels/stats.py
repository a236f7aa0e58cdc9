"""Per-head attention statistics without materialising the attention matrix.

`attention_stats(q, k, ...)` reduces post-RoPE queries and keys of one layer to the row and
column statistics of docs/METRICS.md (lse, top-1, entropy, sink mass, attention distance, WAAD,
segment mass, mass on the first token, on the query itself, on the last w positions and beyond
them; received attention and its band mean). Three backends compute the same thing:

- ``"torch"``: row-chunked streaming in plain torch, memory O(chunk x key_pos) per head
  (`_torch.py`); the CPU default.
- ``"triton"``: a fused two-pass kernel (online-softmax row pass, then a column pass that
  recomputes p from the stored lse; `_triton.py`); the CUDA default. Autotuned per d_head
  and length bucket; INTERP_TRITON_AUTOTUNE=0 launches one fixed config instead.
- ``"reference"``: the dense float64 definition (`_reference.py`), for tests.

The streaming backends return sums; `_finalize` divides the column sums by the number of
real queries they average over and writes NaN where a statistic is undefined.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from interp.errors import InterpError
from interp.kernels._layout import to_bhtd
from interp.kernels._problem import BACKENDS, Problem, RawStats, column_counts, prepare
from interp.kernels._reference import reference_stats
from interp.kernels._torch import torch_stats

__all__ = ["AttentionStats", "attention_stats"]

_ROW_STATS = ("lse", "top1", "top1p", "entropy", "sink", "dist", "waad", "first", "self_mass")
_COLUMN_STATS = ("recv", "recv_mean", "band")


@dataclass(frozen=True)
class AttentionStats:
    """Statistics of one layer's attention, per batch element and query head.

    Row statistics are [batch, head, n_rows], one value per requested query row (float32,
    float64 from the reference backend); padded query rows hold NaN (top1: -1):

    - lse: log sum_j exp(s_ij), natural log; with sink logits, log(exp(sigma_h) + sum_j exp(s_ij)),
      the normaliser of the softmax including the sink.
    - top1: key index (into key_pos, padding included) of max_j A_ij; ties: smallest j.
    - top1p: max_j A_ij.
    - entropy: -sum_j A_ij log A_ij over the keys, in nats (with sink logits the sink is not a
      key: its mass is left out of the sum, so the row's A sums to less than 1).
    - sink: mass on the first `sink_tokens` real tokens.
    - dist: sum_j A_ij (i - j), mean attention distance in positions.
    - waad: sum_j A_ij min(i - j, W), windowed average attention distance (Li et al. 2025).
    - seg: [batch, head, n_rows, n_segments] mass on each labelled key segment, or None.
    - query_rows: [n_rows] key index of each row (key_pos - query_pos + the row of q).
    - first: mass on the first real token (position 0 after padding: BOS when the tokenizer
      adds one), whatever `sink_tokens` is; 0 where a sliding window hides it.
    - self_mass: A_ii, the mass on the query's own key.
    - recent: [batch, head, n_rows, n_windows] mass on the keys with 0 <= i - j < w, for each
      w of `recent_windows` (the last w positions, the query included); None without windows.
    - distant: [batch, head, n_rows, n_windows] mass on the keys with i - j >= w that are not
      among the first `sink_tokens` real tokens; None without windows. With sink_tokens = 0
      (and a causal mask) recent + distant is the row's mass; otherwise the sink tokens
      more than w - 1 positions back hold the rest. Profiles of heads (issue 22) read these with entropy,
      dist, waad, top1p, sink and the column recv.

    Column statistics are [batch, head, key_pos] over all query rows of q (None when
    columns=False); padded keys hold NaN:

    - recv: sum_i A_ij, attention received by key j.
    - recv_mean: recv / (number of real queries that may see j: i >= j when causal, and
      i - j < sliding_window in a sliding-window layer); alpha_j of Gu et al. 2024, the mean
      over the queries that can attend to j. NaN when no real query may see j.
    - band: mean of A_ij over the real queries with lo <= i - j <= hi that may also see j
      (so lo is raised to 0 when causal and hi lowered to sliding_window - 1 in a
      sliding-window layer; i up to the last query row of q; with query_pos < key_pos only
      the rows present in q count); FAI of Li et al. 2025 with (lo, hi) = (10, 100). NaN
      when no such query exists.

    Target-key statistics (None unless `targets` was given), [batch, head, n_rows] for targets
    [batch, n_rows], [batch, head, n_rows, n_targets] for targets [batch, n_rows, n_targets]:

    - target: A_{i, t}, the mass of row i on its expected key t = targets[b, r] (0 when the row
      may not see t); the head-detector score of TransformerLens's `head_detector` per row.
    - target_score: s_{i, t}, the scaled (and soft-capped) logit of that key, unmasked; the
      QK-score of Tulchinskii et al. 2024 up to the positive factor `scale`.
      Both are NaN where the target is -1 and on padded query rows.
    """

    lse: Tensor
    top1: Tensor
    top1p: Tensor
    entropy: Tensor
    sink: Tensor
    dist: Tensor
    waad: Tensor
    seg: Tensor | None
    query_rows: Tensor
    recv: Tensor | None
    recv_mean: Tensor | None
    band: Tensor | None
    target: Tensor | None = None
    target_score: Tensor | None = None
    first: Tensor | None = None
    self_mass: Tensor | None = None
    recent: Tensor | None = None
    distant: Tensor | None = None
    recent_windows: tuple[int, ...] = ()  # the w of each recent / distant column

    def to_dataframe(self, which: str = "rows") -> pd.DataFrame:
        """Long format: one line per (batch, head, row) with a column per statistic.

        Args:
            which: "rows" (columns batch, head, row, lse, ..., seg_0, ..., recent_<w>, ...,
                distant_<w>, ...; row is the key index of the query) or "columns" (batch,
                head, key, recv, recv_mean, band).
        """
        if which == "rows":
            stats = {name: getattr(self, name) for name in _ROW_STATS if getattr(self, name) is not None}
            if self.seg is not None:
                stats |= {f"seg_{c}": self.seg[..., c] for c in range(self.seg.shape[-1])}
            for name in ("recent", "distant"):
                per_window = getattr(self, name)
                if per_window is not None:
                    stats |= {f"{name}_{w}": per_window[..., c] for c, w in enumerate(self.recent_windows)}
            index, positions = "row", self.query_rows
        elif which == "columns":
            if self.recv is None:
                raise InterpError("no column statistics: call attention_stats(..., columns=True)")
            stats = {name: getattr(self, name) for name in _COLUMN_STATS}
            index, positions = "key", torch.arange(self.recv.shape[-1])
        else:
            raise InterpError(f"which must be 'rows' or 'columns', got {which!r}")
        batch, heads, n = self.lse.shape[0], self.lse.shape[1], positions.numel()
        grid = torch.cartesian_prod(torch.arange(batch), torch.arange(heads), torch.arange(n))
        frame = {"batch": grid[:, 0].numpy(), "head": grid[:, 1].numpy(), index: positions.cpu()[grid[:, 2]].numpy()}
        frame |= {name: t.detach().cpu().reshape(-1).numpy() for name, t in stats.items()}
        return pd.DataFrame(frame)


def attention_stats(
    q: Float[Tensor, "batch _ _ d_head"],
    k: Float[Tensor, "batch _ _ d_head"],
    *,
    scale: float,
    causal: bool = True,
    sink_tokens: int = 1,
    window: int = 10,
    band: tuple[int, int] = (10, 100),
    segments: Int[Tensor, "batch key_pos"] | None = None,
    n_segments: int | None = None,
    key_padding_mask: Shaped[Tensor, "batch key_pos"] | None = None,
    query_rows: Int[Tensor, " n_rows"] | Sequence[int] | None = None,
    columns: bool = True,
    backend: str = "auto",
    chunk_size: int | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    sink_logits: Float[Tensor, " head"] | None = None,
    targets: Int[Tensor, "batch n_rows *n_targets"] | None = None,
    recent_windows: Sequence[int] = (),
    layout: str = "bhtd",
) -> AttentionStats:
    """Row and column attention statistics of one layer (definitions: docs/METRICS.md).

    s_ij = scale * q_i . k_j (then softcap * tanh(s / softcap) if given), A = softmax over the
    keys query i may see: j <= i when causal, i - j < sliding_window if given, real keys only.
    With learned sink logits sigma (GPT-OSS), the softmax also runs over one extra logit per
    head that is then dropped, as HF transformers' GPT-OSS attention does:
    A_ij = exp(s_ij) / (exp(sigma_h) + sum_k exp(s_ik)); the sink is not a key, so every row
    and column statistic sums only over the real keys, and a row's mass is below 1.

    Args:
        q: post-RoPE queries; query row r sits at key index key_pos - query_pos + r.
        k: post-RoPE keys, not repeated: head h reads kv head h // (head // kv_head).
        scale: the model's softmax scale (1/sqrt(d_head) for Llama).
        causal: mask keys after the query.
        sink_tokens: n of sink_i(n), the mass on the first n real tokens.
        window: W of waad_i(W).
        band: (lo, hi) of band_j: queries with lo <= i - j <= hi.
        segments: label per key, -1 = none, 0..n_segments-1.
        n_segments: number of segments C; default segments.max() + 1.
        key_padding_mask: True (or 1) = real token, as HF's attention_mask. Positions count
            from the first real token; padded keys get zero attention.
        query_rows: indices into q's query_pos; row statistics only for these rows.
        columns: compute column statistics (every row of q contributes).
        backend: "auto" (Triton on CUDA when it imports, else torch), "torch", "triton"
            or "reference" (dense float64, for tests and small inputs).
        chunk_size: query rows per chunk of the torch backend (default: ~16 MiB score tiles).
        softcap: attention logit soft-capping (Gemma 2), or None.
        sliding_window: sliding-window size (Mistral, Gemma 2 local layers), or None.
        sink_logits: learned attention-sink logit sigma_h per query head (GPT-OSS's
            `module.sinks`), or None. Taken as is: not scaled, not soft-capped. lse then
            includes the sink term, log(exp(sigma_h) + sum_j exp(s_ij)); entropy sums over the
            real keys only.
        targets: expected key index per requested row ([batch, n_rows] or [batch, n_rows,
            n_targets], -1 = none): adds `target` (A_{i,t}) and `target_score` (s_{i,t}).
        recent_windows: the w of `recent` (mass on the last w positions) and `distant` (mass
            beyond them, sink tokens excluded), distinct ints >= 1; empty: both None.
        layout: the axis order of q and k: "bhtd" (default) [batch, head, pos, d_head], or
            "bthd" [batch, pos, head, d_head] (TransformerLens's hook_q/hook_k). A shape that
            cannot be the given layout is refused (`interp.kernels._layout`).

    Returns:
        AttentionStats; float32 (float64 for the reference backend).

    Raises:
        InterpError: on any invalid input, or a backend that cannot run here.
    """
    q, k = to_bhtd(q, k, layout)
    problem = prepare(
        q,
        k,
        scale=scale,
        causal=causal,
        softcap=softcap,
        sliding_window=sliding_window,
        sink_logits=sink_logits,
        sink_tokens=sink_tokens,
        window=window,
        band=band,
        segments=segments,
        n_segments=n_segments,
        key_padding_mask=key_padding_mask,
        query_rows=query_rows,
        columns=columns,
        targets=targets,
        recent_windows=recent_windows,
    )
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise InterpError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    if backend not in BACKENDS:
        raise InterpError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "triton" if q.is_cuda and triton_unavailable(q) is None else "torch"
    if backend == "reference":
        out = reference_stats(problem)
        return AttentionStats(query_rows=problem.offset + problem.rows, recent_windows=problem.recent_windows, **out)
    if backend == "triton":
        reason = triton_unavailable(q)
        if reason is not None:
            raise InterpError(reason)
        from interp.kernels._triton import triton_stats  # imported late: see triton_unavailable

        return _finalize(problem, triton_stats(problem))
    return _finalize(problem, torch_stats(problem, chunk_size=chunk_size))


def triton_unavailable(q: Tensor) -> str | None:
    """Why the Triton backend cannot run on `q` here (None if it can).

    It runs on CUDA tensors, or on CPU tensors under Triton's interpreter
    (TRITON_INTERPRET=1, read when `interp.kernels._triton` is first imported).
    """
    if importlib.util.find_spec("triton") is None:
        return "backend='triton' needs the triton package (pip install 'interp[triton]'); or use backend='torch'"
    if q.is_cuda or os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        return None
    return (
        f"backend='triton' needs CUDA tensors, q is on {q.device}: use backend='torch' "
        "(or set TRITON_INTERPRET=1 before importing interp.kernels to run Triton's slow interpreter)"
    )


def _finalize(problem: Problem, raw: RawStats) -> AttentionStats:
    """Turn a backend's row stats and column sums into AttentionStats (float32)."""
    row_real = problem.query_real()[:, problem.rows][:, None, :]  # [batch, 1, n_rows]
    nan = float("nan")
    rows = {name: getattr(raw, name).float().masked_fill(~row_real, nan) for name in _ROW_STATS if name != "top1"}
    rows["top1"] = raw.top1.masked_fill(~row_real, -1)
    per_window = {}  # seg [.., n_segments], recent and distant [.., n_windows]: NaN on padded rows
    for name in ("seg", "recent", "distant"):
        value = getattr(raw, name)
        per_window[name] = value.float().masked_fill(~row_real[..., None], nan) if value is not None else None
    cols: dict[str, Tensor | None] = dict.fromkeys(_COLUMN_STATS)
    if problem.columns:
        assert raw.recv_sum is not None and raw.band_sum is not None
        recv_count, band_count = column_counts(problem)
        key_pad = ~problem.key_real[:, None, :]
        cols["recv"] = raw.recv_sum.float().masked_fill(key_pad, nan)
        cols["recv_mean"] = (raw.recv_sum / recv_count[:, None]).float().masked_fill(key_pad, nan)
        cols["band"] = (raw.band_sum / band_count[:, None]).float().masked_fill(key_pad, nan)
    target = target_score = None
    if problem.targets is not None:
        assert raw.target_mass is not None and raw.target_score is not None
        row_pad = ~row_real[..., None]
        target = raw.target_mass.float().masked_fill(row_pad, nan)
        target_score = raw.target_score.float().masked_fill(row_pad, nan)
        if problem.targets_2d:
            target, target_score = target[..., 0], target_score[..., 0]
    return AttentionStats(
        query_rows=problem.offset + problem.rows,
        **rows,
        **per_window,
        **cols,
        target=target,
        target_score=target_score,
        recent_windows=problem.recent_windows,
    )

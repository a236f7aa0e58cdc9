"""Per-head attention statistics without materialising the attention matrix.

`attention_stats(q, k, ...)` reduces post-RoPE queries and keys of one layer to the row and
column statistics of docs/METRICS.md (lse, top-1, entropy, sink mass, attention distance, WAAD,
segment mass, mass on the first token, on the query itself, on the last w positions and beyond
them; received attention and its band mean; with per-key weights such as ||v_j||, the
value-weighted shares of Kobayashi et al. 2020). Each statistic is one row of the table in
`_table.py`, which `AttentionStats`, `to_dataframe` and `_finalize` iterate. Three backends
compute the same thing:

- ``"torch"``: row-chunked streaming in plain torch, memory O(chunk x key_pos) per head
  (`_torch.py`); the CPU default.
- ``"triton"``: a fused two-pass kernel (online-softmax row pass, then a column pass that
  recomputes p from the stored lse; `_triton.py`); the CUDA default. Autotuned per d_head
  and length bucket; INTERP_TRITON_AUTOTUNE=0 launches one fixed config instead.
- ``"reference"``: the dense float64 definition (`_reference.py`), for tests.

The streaming backends return sums; `_finalize` divides the column sums whose reduction is a
mean by the number of real queries they average over and writes each statistic's fill value
where it is undefined.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import make_dataclass
from typing import ClassVar

import pandas as pd
import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from interp.errors import InterpError
from interp.kernels._layout import to_bhtd
from interp.kernels._problem import BACKENDS, Problem, RawStats, column_counts, prepare
from interp.kernels._reference import reference_stats
from interp.kernels._table import STATS, Stat, present, raw_names
from interp.kernels._torch import torch_stats

__all__ = ["AttentionStats", "attention_stats"]

_AttentionStatsFields = make_dataclass(
    "_AttentionStatsFields",
    [("query_rows", Tensor), *((stat.name, Tensor | None, None) for stat in STATS), ("recent_windows", tuple, ())],
    frozen=True,
)


class AttentionStats(_AttentionStatsFields):
    """Statistics of one layer's attention, per batch element and query head.

    One field per row of the statistics table (`interp.kernels._table.STATS`), listed below
    with its shape, plus `query_rows` ([n_rows] key index of each row: key_pos - query_pos +
    the row of q) and `recent_windows` (the w of each per-window column). A statistic the call
    did not ask for is None (seg without segments, per-window ones without recent_windows,
    column ones with columns=False, target ones without targets). float32 (top1 int64) from
    the streaming backends, float64 from the reference. Padded query rows hold NaN (top1: -1),
    padded keys NaN in the column statistics. Full definitions: docs/METRICS.md.
    """

    table: ClassVar[tuple[Stat, ...]] = STATS  # the statistics its fields hold, iterated by every method

    def to_dataframe(self, which: str = "rows") -> pd.DataFrame:
        """Long format: one line per (batch, head, row) with a column per statistic.

        Args:
            which: "rows" (columns batch, head, row, then each row statistic in table order,
                per-segment ones as seg_<c> and per-window ones as recent_<w>, ...; row is
                the key index of the query) or "columns" (batch, head, key, recv, recv_mean,
                band, ...).
        """
        if which not in ("rows", "columns"):
            raise InterpError(f"which must be 'rows' or 'columns', got {which!r}")
        if which == "columns" and self.recv is None:
            raise InterpError("no column statistics: call attention_stats(..., columns=True)")
        stats: dict[str, Tensor] = {}
        for stat in self.table:
            value = getattr(self, stat.name)
            if value is None or (stat.shape == "column") != (which == "columns") or stat.shape == "target":
                continue
            if stat.shape == "segment":
                stats |= {f"{stat.name}_{c}": value[..., c] for c in range(value.shape[-1])}
            elif stat.shape == "window":
                stats |= {f"{stat.name}_{w}": value[..., c] for c, w in enumerate(self.recent_windows)}
            else:
                stats[stat.name] = value
        index, positions = ("row", self.query_rows) if which == "rows" else ("key", torch.arange(self.recv.shape[-1]))
        batch, heads, n = self.lse.shape[0], self.lse.shape[1], positions.numel()
        grid = torch.cartesian_prod(torch.arange(batch), torch.arange(heads), torch.arange(n))
        frame = {"batch": grid[:, 0].numpy(), "head": grid[:, 1].numpy(), index: positions.cpu()[grid[:, 2]].numpy()}
        frame |= {name: t.detach().cpu().reshape(-1).numpy() for name, t in stats.items()}
        return pd.DataFrame(frame)


_SHAPE_DOC = {
    "row": "[batch, head, n_rows]",
    "segment": "[batch, head, n_rows, n_segments]",
    "window": "[batch, head, n_rows, n_windows]",
    "column": "[batch, head, key_pos]",
    "target": "[batch, head, n_rows] or [batch, head, n_rows, n_targets], as targets",
}
AttentionStats.__doc__ = (
    (AttentionStats.__doc__ or "")
    + "\n    Statistics:\n\n"
    + "\n".join(f"    - {stat.name} {_SHAPE_DOC[stat.shape]}: {stat.doc}." for stat in STATS)
)


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
    key_weight: Float[Tensor, "batch _ _"] | None = None,
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
        key_weight: [batch, kv_head or head, key_pos] non-negative weight w_j of each key,
            e.g. ||v_j|| (per kv head, shared by its query heads) or ||W_O^h v_j|| (per head;
            Kobayashi et al. 2020): adds the value-weighted shares w_first, w_sink,
            w_self_mass, w_recent, w_distant (row shares of sum_j A_ij w_j) and w_recv (column
            sums of A_ij w_j / sum_j' A_ij' w_j'). Always this axis order, whatever `layout`.
            A sink logit is not a key and carries no value: it has no weight, so the shares
            do not depend on it. NaN on rows whose visible keys all have weight 0.

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
        key_weight=key_weight,
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


def _finalize(problem: Problem, raw: RawStats, cls: type[AttentionStats] = AttentionStats) -> AttentionStats:
    """Turn a backend's raw outputs into `cls` (AttentionStats), one row of `cls.table` at a time (float32).

    Row values are kept as they are, column sums divided by their query counts where the
    reduction is a mean; each statistic gets its fill value on padded rows (padded keys).
    """
    want = raw_names(problem, table=cls.table)
    assert set(raw) == set(want), f"backend returned {sorted(raw)}, the table asks for {sorted(want)}"
    pad_row = ~problem.query_real()[:, problem.rows][:, None, :]  # [batch, 1, n_rows]
    pad_key = ~problem.key_real[:, None, :]  # [batch, 1, key_pos]
    counts = dict(zip(("mean", "band mean"), column_counts(problem))) if problem.columns else {}
    values: dict[str, Tensor | None] = {}
    for stat in cls.table:
        if not present(stat, problem):
            values[stat.name] = None
            continue
        value = raw[stat.source]
        if stat.reduction in counts:
            value = value / counts[stat.reduction][:, None]
        pad = pad_key if stat.shape == "column" else pad_row.view(*pad_row.shape, *[1] * (value.ndim - 3))
        value = value.to(stat.dtype).masked_fill(pad, stat.fill)
        if stat.shape == "target" and problem.targets_2d:
            value = value[..., 0]
        values[stat.name] = value
    return cls(query_rows=problem.offset + problem.rows, recent_windows=problem.recent_windows, **values)

"""Fused two-pass Triton kernel for the attention statistics (the CUDA default).

Pass 1, the row pass, is flash attention's forward loop without the value matmul: a program
owns BLOCK_M query rows of one head and walks over the key tiles they can see. The running
max m and normaliser l are kept in registers (online softmax); every row statistic is a sum
of p * x, so it is rescaled by alpha = exp(m_old - m_new) whenever the max grows, exactly as
flash attention rescales its output accumulator. Masked row sums give the sink mass, the
first real token, the query's own key, and per window w of `recent_windows` the band
0 <= a - j < w (recent) and the non-sink keys beyond it (distant). With per-key weights w_j
the same sums run over p w_j, and each value-weighted share is one over sum_j p w_j.

Pass 2, the column pass, swaps the roles: a program owns BLOCK_N keys of one head and walks
over the query tiles that can see them. It recomputes p = exp(s - lse) from the lse stored
by pass 1, so each column sum is complete inside one program: no atomics. A third, small
pass serves the target-key statistics (`_triton_targets.py`).

The outputs follow the statistics table (`_table.py`): each kernel has one output argument
per statistic it writes, named after it (self_mass -> SelfMass), allocated, passed by keyword
and sliced by iterating the table, so a statistic cannot land in another's buffer.

Learned sink logits (GPT-OSS) only touch the row pass's epilogue: the sink adds
exp(sigma - m) to the normaliser, the accumulators are rescaled to the new normaliser, and
the stored lse includes the sink, so the column pass's p = exp(s - lse) is already right.

Grouped-query attention: query head h loads the keys of kv head h // GROUP; nothing is
repeated in memory. On a GPU both passes are autotuned (`_triton_tune.py`); under Triton's
interpreter (TRITON_INTERPRET=1, used by the CPU tests) one fixed config runs, and bf16
inputs are upcast on the host because the interpreter's bf16 `tl.dot` is wrong. On a GPU
bf16 runs natively: tl.dot of bf16 tiles accumulates in fp32, as every statistic does.
"""

from __future__ import annotations

import os
from typing import no_type_check

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from interp.errors import InterpError
from interp.kernels._problem import Problem, RawStats
from interp.kernels._table import STATS, Stat, present
from interp.kernels._triton_targets import _softcap, target_pass
from interp.kernels._triton_tune import (
    _COL_CONFIGS,
    _FIXED_CONFIG,
    _ROW_CONFIGS,
    _autotune_options,
    _t_bucket,
    autotune_enabled,
)

__all__ = ["triton_stats", "autotune_enabled"]

_KNOBS = getattr(triton, "knobs", None)  # triton >= 3.4; older versions read the variable directly
_INTERPRET = bool(_KNOBS.runtime.interpret) if _KNOBS else os.environ.get("TRITON_INTERPRET", "0") == "1"
# Triton builds its own jit helpers (tl.zeros, ...) when it is first imported, so the
# interpreter only works when TRITON_INTERPRET=1 was set before that first import.
_INTERPRET_BROKEN = _INTERPRET and not isinstance(tl.zeros, InterpretedFunction)
_ROW_SHAPES = ("row", "segment", "window")  # the table's statistics that the row pass writes


@triton.jit
@no_type_check  # the test-time type-check hook must not wrap a Triton kernel
def _row_pass(
    Q, K, KeyReal, Labels, Rows, FirstReal, Sinks, Win, KeyWeight,  # inputs; Labels [batch, key_pos] int32
    stride_qb, stride_qh, stride_qm, stride_qd,  # segment labels, Sinks [head] float32, Win [N_WIN] int32,
    stride_kb, stride_kh, stride_kn, stride_kd,  # KeyWeight [batch, head, key_pos] float32
    n_rows, n_heads, group, n_keys, offset, n_seg,
    scale, cap, sliding, sink_tokens, window, t_bucket,  # t_bucket: autotune key only
    # outputs: one per row-like statistic of the table, named after it and passed by keyword,
    # [batch, head, n_rows] (Seg: + [n_seg], the window ones: + [N_WIN]); then WInv [batch, head,
    # n_rows], 1 / sum_j A_ij w_j for the column pass (0 where there is no weighted mass)
    Lse, Top1, Top1p, Entropy, Sink, Dist, Waad, First, SelfMass, WFirst, WSink, WSelfMass,
    Seg, Recent, Distant, WRecent, WDistant, WInv,
    HEAD_DIM: tl.constexpr, SEG_PAD: tl.constexpr,
    CAUSAL: tl.constexpr, SOFTCAP: tl.constexpr, SLIDING: tl.constexpr, HAS_SEG: tl.constexpr,
    HAS_SINK: tl.constexpr, HAS_WEIGHT: tl.constexpr, PRECISION: tl.constexpr,
    N_WIN: tl.constexpr, WIN_PAD: tl.constexpr,  # recent / distant windows, and a power of 2 >= N_WIN
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads).to(tl.int64)  # 64-bit: batch * stride can pass 2^31
    h = (pid_bh % n_heads).to(tl.int64)
    kv = h // group
    # -- this program's query rows; a = their key index (the row's own position) --
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < n_rows
    rows = tl.load(Rows + offs_m, mask=row_ok, other=0)
    a = offset + rows
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=row_ok[:, None],
        other=0.0,
    )
    first_real = tl.load(FirstReal + b)
    # -- running max m_i (with its argmax) and normaliser l_i live in registers; each
    #    statistic accumulates sum_j p_ij x_ij with p relative to the running max --
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    top1 = tl.zeros([BLOCK_M], tl.int32)
    acc_s = tl.zeros([BLOCK_M], tl.float32)  # sum p s    -> entropy = lse - acc_s / l
    acc_sink = tl.zeros([BLOCK_M], tl.float32)  # sum p [j < first_real + n]
    acc_dist = tl.zeros([BLOCK_M], tl.float32)  # sum p (a - j)
    acc_waad = tl.zeros([BLOCK_M], tl.float32)  # sum p min(a - j, W)
    acc_seg = tl.zeros([BLOCK_M, SEG_PAD], tl.float32)  # sum p [seg_j == c]
    acc_first = tl.zeros([BLOCK_M], tl.float32)  # sum p [j == first_real]
    acc_self = tl.zeros([BLOCK_M], tl.float32)  # sum p [j == a]
    offs_w = tl.arange(0, WIN_PAD)
    acc_recent = tl.zeros([BLOCK_M, WIN_PAD], tl.float32)  # column c: sum p [0 <= a - j < w_c]
    acc_distant = tl.zeros([BLOCK_M, WIN_PAD], tl.float32)  # column c: sum p [a - j >= w_c, j not a sink token]
    # value-weighted: the same sums over p w_j (HAS_WEIGHT); a share is its sum over acc_w
    acc_w = tl.zeros([BLOCK_M], tl.float32)  # sum p w
    acc_wsink = tl.zeros([BLOCK_M], tl.float32)
    acc_wfirst = tl.zeros([BLOCK_M], tl.float32)
    acc_wself = tl.zeros([BLOCK_M], tl.float32)
    acc_wrecent = tl.zeros([BLOCK_M, WIN_PAD], tl.float32)
    acc_wdistant = tl.zeros([BLOCK_M, WIN_PAD], tl.float32)
    # -- the keys these rows can see: from the first real token (and the window start)
    #    up to the last row's own position when causal --
    lo = first_real
    if SLIDING:
        lo = tl.maximum(lo, tl.min(tl.where(row_ok, a, n_keys)) - sliding + 1)
    hi = n_keys
    if CAUSAL:
        hi = tl.max(tl.where(row_ok, a, 0)) + 1
    k_base = K + b * stride_kb + kv * stride_kh
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < n_keys
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=key_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=tl.float32) * scale  # fp32 accumulation
        if SOFTCAP:
            s = _softcap(s, cap)
        key_real = tl.load(KeyReal + b * n_keys + offs_n, mask=key_ok, other=0)
        # -- visible: the key exists, is a real token, and the query may see it --
        vis = (key_real != 0)[None, :] & key_ok[None, :]
        if CAUSAL:
            vis = vis & (offs_n[None, :] <= a[:, None])
        if SLIDING:
            vis = vis & (offs_n[None, :] > a[:, None] - sliding)
        s = tl.where(vis, s, float("-inf"))
        # -- top-1: the tile's max and its smallest index; a later tile wins only when
        #    strictly larger, so ties go to the smallest j as in torch.argmax --
        tile_max = tl.max(s, 1)
        tile_arg = tl.min(tl.where(s == tile_max[:, None], offs_n[None, :], n_keys), 1)
        top1 = tl.where(tile_max > m_i, tile_arg, top1)
        # -- online softmax: rescale everything accumulated so far to the new max --
        m_new = tl.maximum(m_i, tile_max)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])  # 0 on invisible keys
        lag_i = a[:, None] - offs_n[None, :]
        lag = lag_i.to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc_s = acc_s * alpha + tl.sum(p * tl.where(vis, s, 0.0), 1)
        acc_dist = acc_dist * alpha + tl.sum(p * lag, 1)
        acc_waad = acc_waad * alpha + tl.sum(p * tl.minimum(lag, window), 1)
        is_sink = offs_n < first_real + sink_tokens
        acc_sink = acc_sink * alpha + tl.sum(tl.where(is_sink[None, :], p, 0.0), 1)
        if HAS_SEG:
            labels = tl.load(Labels + b * n_keys + offs_n, mask=key_ok, other=-1)
            onehot = (labels[:, None] == tl.arange(0, SEG_PAD)[None, :]).to(tl.float32)
            acc_seg = acc_seg * alpha[:, None] + tl.dot(p, onehot, input_precision="ieee")
        acc_first = acc_first * alpha + tl.sum(tl.where(offs_n[None, :] == first_real, p, 0.0), 1)
        acc_self = acc_self * alpha + tl.sum(tl.where(lag_i == 0, p, 0.0), 1)
        if HAS_WEIGHT:
            # -- value-weighted: pw = p w_j over the same key sets (Kobayashi et al. 2020) --
            pw = p * tl.load(KeyWeight + pid_bh * n_keys + offs_n, mask=key_ok, other=0.0)[None, :]
            acc_w = acc_w * alpha + tl.sum(pw, 1)
            acc_wsink = acc_wsink * alpha + tl.sum(tl.where(is_sink[None, :], pw, 0.0), 1)
            acc_wfirst = acc_wfirst * alpha + tl.sum(tl.where(offs_n[None, :] == first_real, pw, 0.0), 1)
            acc_wself = acc_wself * alpha + tl.sum(tl.where(lag_i == 0, pw, 0.0), 1)
        if N_WIN > 0:
            # -- one masked row sum per window, written into column c of the [BLOCK_M, WIN_PAD]
            #    accumulators (the window count is a constexpr: the loop unrolls) --
            acc_recent = acc_recent * alpha[:, None]
            acc_distant = acc_distant * alpha[:, None]
            acc_wrecent = acc_wrecent * alpha[:, None]
            acc_wdistant = acc_wdistant * alpha[:, None]
            for c in tl.static_range(N_WIN):
                w = tl.load(Win + c)
                in_recent = (lag_i >= 0) & (lag_i < w)
                in_distant = (lag_i >= w) & (offs_n >= first_real + sink_tokens)[None, :]
                recent = tl.sum(tl.where(in_recent, p, 0.0), 1)
                distant = tl.sum(tl.where(in_distant, p, 0.0), 1)
                acc_recent += tl.where(offs_w[None, :] == c, recent[:, None], 0.0)
                acc_distant += tl.where(offs_w[None, :] == c, distant[:, None], 0.0)
                if HAS_WEIGHT:
                    w_recent = tl.sum(tl.where(in_recent, pw, 0.0), 1)
                    w_distant = tl.sum(tl.where(in_distant, pw, 0.0), 1)
                    acc_wrecent += tl.where(offs_w[None, :] == c, w_recent[:, None], 0.0)
                    acc_wdistant += tl.where(offs_w[None, :] == c, w_distant[:, None], 0.0)
        m_i = m_new
    # -- epilogue: lse = m + log l; every mean is its accumulator over l --
    #    (a padded row may see no key at all: l = 0; its values are discarded later)
    l_i = tl.where(l_i > 0, l_i, 1.0)
    if HAS_SINK:
        # -- the sink logit joins the normaliser at a common max m_fin; the accumulators
        #    (relative to m_i) are rescaled by keep = exp(m_i - m_fin), so every mean is
        #    acc * keep / l_fin and the stored lse includes the sink --
        sigma = tl.load(Sinks + h)
        m_fin = tl.maximum(m_i, sigma)
        keep = tl.exp(m_i - m_fin)  # 0 for a row that saw no key (m_i = -inf)
        l_fin = l_i * keep + tl.exp(sigma - m_fin)
        lse = m_fin + tl.log(l_fin)
        inv_l = keep / l_fin
        # -sum_j A log A = mass * lse - sum_j A s, with mass = sum_j A_ij < 1 (the sink's share is out)
        entropy = (l_i * inv_l) * lse - acc_s * inv_l
    else:
        lse = m_i + tl.log(l_i)
        inv_l = 1.0 / l_i
        entropy = lse - acc_s * inv_l
    out = pid_bh * n_rows + offs_m
    tl.store(Lse + out, lse, mask=row_ok)
    tl.store(Top1 + out, top1, mask=row_ok)
    tl.store(Top1p + out, inv_l, mask=row_ok)  # max_j A_ij = exp(m - lse) (= 1 / l without a sink)
    tl.store(Entropy + out, entropy, mask=row_ok)
    tl.store(Sink + out, acc_sink * inv_l, mask=row_ok)
    tl.store(Dist + out, acc_dist * inv_l, mask=row_ok)
    tl.store(Waad + out, acc_waad * inv_l, mask=row_ok)
    tl.store(First + out, acc_first * inv_l, mask=row_ok)
    tl.store(SelfMass + out, acc_self * inv_l, mask=row_ok)
    if N_WIN > 0:
        win_out = out[:, None] * N_WIN + offs_w[None, :]
        win_ok = row_ok[:, None] & (offs_w < N_WIN)[None, :]
        tl.store(Recent + win_out, acc_recent * inv_l[:, None], mask=win_ok)
        tl.store(Distant + win_out, acc_distant * inv_l[:, None], mask=win_ok)
    if HAS_WEIGHT:
        # -- shares: a weighted sum over acc_w (l and the sink cancel; NaN without weighted mass) --
        share = tl.where(acc_w > 0, 1.0 / tl.where(acc_w > 0, acc_w, 1.0), float("nan"))
        tl.store(WSink + out, acc_wsink * share, mask=row_ok)
        tl.store(WFirst + out, acc_wfirst * share, mask=row_ok)
        tl.store(WSelfMass + out, acc_wself * share, mask=row_ok)
        total = acc_w * inv_l  # sum_j A_ij w_j
        tl.store(WInv + out, tl.where(total > 0, 1.0 / tl.where(total > 0, total, 1.0), 0.0), mask=row_ok)
        if N_WIN > 0:
            tl.store(WRecent + out[:, None] * N_WIN + offs_w[None, :], acc_wrecent * share[:, None], mask=win_ok)
            tl.store(WDistant + out[:, None] * N_WIN + offs_w[None, :], acc_wdistant * share[:, None], mask=win_ok)
    if HAS_SEG:
        offs_c = tl.arange(0, SEG_PAD)
        tl.store(
            Seg + out[:, None] * n_seg + offs_c[None, :],
            acc_seg * inv_l[:, None],
            mask=row_ok[:, None] & (offs_c < n_seg)[None, :],
        )


@triton.jit
@no_type_check  # the test-time type-check hook must not wrap a Triton kernel
def _column_pass(
    Q, K, KeyReal, Lse, KeyWeight, WInv,  # inputs; Lse and WInv [batch, head, query_pos] from the row pass
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    n_queries, n_heads, group, n_keys, offset,
    scale, cap, sliding, band_lo, band_hi, t_bucket,  # t_bucket: autotune key only
    # outputs: the table's column sums, named after them and passed by keyword, [batch, head, key_pos]
    Recv, Band, WRecv,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr, SOFTCAP: tl.constexpr, SLIDING: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    kv = h // group
    # -- this program's keys, loaded once --
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    key_ok = offs_n < n_keys
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(
        K + b * stride_kb + kv * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
        mask=key_ok[:, None],
        other=0.0,
    )
    key_real = tl.load(KeyReal + b * n_keys + offs_n, mask=key_ok, other=0)
    recv = tl.zeros([BLOCK_N], tl.float32)
    band = tl.zeros([BLOCK_N], tl.float32)
    w_recv = tl.zeros([BLOCK_N], tl.float32)  # sum_i A_ij / sum_j' A_ij' w_j' (times w_j at the end)
    # -- the query rows that can see these keys: from the first key's own row when causal,
    #    up to the last key's window end when sliding --
    lo = 0
    if CAUSAL:
        lo = tl.maximum(pid_n * BLOCK_N - offset, 0)
    hi = n_queries
    if SLIDING:
        hi = tl.minimum(hi, pid_n * BLOCK_N + BLOCK_N - 1 + sliding - offset)
    q_base = Q + b * stride_qb + h * stride_qh
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < n_queries
        a = offset + offs_m
        q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=row_ok[:, None], other=0.0)
        lse = tl.load(Lse + pid_bh * n_queries + offs_m, mask=row_ok, other=0.0)
        query_real = tl.load(KeyReal + b * n_keys + a, mask=row_ok, other=0) != 0
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=tl.float32) * scale  # fp32 accumulation
        if SOFTCAP:
            s = _softcap(s, cap)
        # -- p recomputed from the stored lse: the row's final normaliser is known --
        vis = (key_real != 0)[None, :] & key_ok[None, :] & (query_real & row_ok)[:, None]
        if CAUSAL:
            vis = vis & (offs_n[None, :] <= a[:, None])
        if SLIDING:
            vis = vis & (offs_n[None, :] > a[:, None] - sliding)
        p = tl.where(vis, tl.exp(s - lse[:, None]), 0.0)
        recv += tl.sum(p, 0)
        lag = a[:, None] - offs_n[None, :]
        band += tl.sum(tl.where((lag >= band_lo) & (lag <= band_hi), p, 0.0), 0)
        if HAS_WEIGHT:
            w_recv += tl.sum(p * tl.load(WInv + pid_bh * n_queries + offs_m, mask=row_ok, other=0.0)[:, None], 0)
    out = pid_bh * n_keys + offs_n
    tl.store(Recv + out, recv, mask=key_ok)
    tl.store(Band + out, band, mask=key_ok)
    if HAS_WEIGHT:
        tl.store(WRecv + out, w_recv * tl.load(KeyWeight + out, mask=key_ok, other=0.0), mask=key_ok)


_ROW_KEY = ["HEAD_DIM", "SEG_PAD", "CAUSAL", "PRECISION", "N_WIN", "HAS_WEIGHT", "t_bucket"]
_COL_KEY = ["HEAD_DIM", "CAUSAL", "PRECISION", "HAS_WEIGHT", "t_bucket"]
_row_tuned = _column_tuned = None  # the interpreter runs one fixed config
if not _INTERPRET:
    _row_tuned = triton.autotune(_ROW_CONFIGS, key=_ROW_KEY, **_autotune_options())(_row_pass)
    _column_tuned = triton.autotune(_COL_CONFIGS, key=_COL_KEY, **_autotune_options())(_column_pass)


def _launchers(config: dict | None) -> tuple[object, object, dict]:
    """(row kernel, column kernel, launch options): autotuned on a GPU unless a config is fixed."""
    if config is not None:
        return _row_pass, _column_pass, dict(config)
    if _INTERPRET or not autotune_enabled():
        return _row_pass, _column_pass, dict(_FIXED_CONFIG)
    return _row_tuned, _column_tuned, {}


def triton_stats(problem: Problem, config: dict | None = None) -> RawStats:
    """Row statistics and column sums of `problem` with the two Triton passes.

    Args:
        config: launch both passes with this fixed config (BLOCK_M, BLOCK_N and optionally
            num_warps, num_stages) instead of autotuning; the tests use it to check every
            entry of the search spaces.
    """
    if _INTERPRET_BROKEN:
        raise InterpError(
            "TRITON_INTERPRET=1 was set after triton was imported; set it before the first "
            "`import triton` (e.g. in the shell), or use backend='torch'"
        )
    pb = problem
    q, k = _kernel_inputs(pb)
    key_real = pb.key_real.to(torch.int8).contiguous()
    common = dict(
        HEAD_DIM=q.shape[-1],
        CAUSAL=pb.causal,
        SOFTCAP=pb.softcap is not None,
        SLIDING=pb.sliding_window is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else None,  # fp32 data: no tf32 rounding
    )
    row_kernel, column_kernel, fixed = _launchers(config)
    fixed["enable_fp_fusion"] = True  # Triton's default, said explicitly (3.9 warns when it is left unset)
    rows = torch.arange(pb.query_pos, device=q.device) if pb.columns else pb.rows
    outputs = _row_outputs(pb, rows.numel())
    weighted = pb.key_weight is not None
    weights = pb.key_weight.to(torch.float32).contiguous() if weighted else torch.zeros(1, device=q.device)
    w_inv = torch.empty(pb.batch, pb.heads, rows.numel() if weighted else 1, device=q.device)
    common["HAS_WEIGHT"] = weighted
    if rows.numel():
        _launch_rows(pb, row_kernel, (q, k, key_real, rows, weights), outputs | {"w_inv": w_inv}, common | fixed)
    raw = {stat.name: outputs[stat.name] for stat in STATS if stat.shape in _ROW_SHAPES and present(stat, pb)}
    if pb.columns:
        # one buffer per column sum of the table (a 1-element stand-in where absent), by source name
        sources = {stat.source: present(stat, pb) for stat in STATS if stat.shape == "column"}
        sums = {
            name: torch.empty((pb.batch, pb.heads, pb.key_pos) if on else (1,), device=q.device)
            for name, on in sources.items()
        }
        column_kernel[lambda meta: (triton.cdiv(pb.key_pos, meta["BLOCK_N"]), pb.batch * pb.heads)](
            q, k, key_real, outputs["lse"], weights, w_inv,
            *q.stride(), *k.stride(),
            pb.query_pos, pb.heads, pb.group, pb.key_pos, pb.offset,
            pb.scale, pb.softcap or 1.0, pb.sliding_window or 1, pb.band[0], pb.band[1], _t_bucket(pb.key_pos),
            **{_camel(name): t for name, t in sums.items()}, **common, **fixed,
        )  # fmt: skip
        raw = {name: t[:, :, pb.rows] for name, t in raw.items()}  # the row pass ran over every row
        raw |= {name: t for name, t in sums.items() if sources[name]}
    raw["top1"] = raw["top1"].to(torch.int64)
    if "seg" in raw:
        raw["seg"] = raw["seg"][..., : pb.n_segments]
    if pb.targets is not None:
        raw["target"], raw["target_score"] = target_pass(pb, q, k, key_real, raw["lse"])
    return raw


def _camel(name: str) -> str:
    """The kernel argument that receives a statistic's output: self_mass -> SelfMass."""
    return "".join(part.capitalize() for part in name.split("_"))


def _kernel_inputs(pb: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k as the kernels take them: d_head zero-padded to a power of 2 >= 16, fp32 for bf16 when interpreted."""
    q, k = pb.q, pb.k
    # bf16 on a GPU: tl.dot takes bf16 tiles and accumulates in fp32, like fp16; everything
    # after the dot is fp32. The interpreter's bf16 tl.dot is wrong, so there it runs in fp32.
    if _INTERPRET and q.dtype == torch.bfloat16:
        q, k = q.float(), k.float()
    head_dim = max(16, triton.next_power_of_2(q.shape[-1]))  # tl.dot wants >= 16, arange a power of 2
    if head_dim != q.shape[-1]:  # zero-padding d_head leaves every q . k unchanged
        q = torch.nn.functional.pad(q, (0, head_dim - q.shape[-1]))
        k = torch.nn.functional.pad(k, (0, head_dim - k.shape[-1]))
    return q, k


def _row_outputs(pb: Problem, n_rows: int, table: tuple[Stat, ...] = STATS) -> dict[str, torch.Tensor]:
    """A buffer per row-like statistic of the table (a 1-element stand-in where absent), by name."""
    extra = {"row": (), "segment": (max(pb.n_segments, 1),), "window": (max(len(pb.recent_windows), 1),)}
    out = {}
    for stat in table:
        if stat.shape in _ROW_SHAPES:
            shape = (pb.batch, pb.heads, n_rows, *extra[stat.shape]) if present(stat, pb) else (1,)
            dtype = torch.int32 if stat.dtype == torch.int64 else torch.float32
            out[stat.name] = torch.empty(shape, dtype=dtype, device=pb.q.device)
    return out


def _launch_rows(pb: Problem, kernel, inputs: tuple, outputs: dict, options: dict) -> None:
    """Launch the row pass: inputs (q, k, key_real, rows of q, key weights), outputs by name (`_row_outputs`)."""
    q, k, key_real, rows, weights = inputs
    device = q.device
    n_rows, n_seg, n_win = rows.numel(), pb.n_segments, len(pb.recent_windows)
    labels = pb.segments if pb.segments is not None else torch.full((1,), -1, device=device)
    sinks = pb.sink_logits if pb.sink_logits is not None else torch.zeros(1, dtype=torch.float64, device=device)
    windows = torch.tensor(pb.recent_windows or (1,), dtype=torch.int32, device=device)
    kernel[lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]), pb.batch * pb.heads)](
        q, k, key_real, labels.to(torch.int32).contiguous(), rows.to(torch.int32).contiguous(),
        pb.first_real.to(torch.int32), sinks.to(torch.float32).contiguous(), windows, weights,
        *q.stride(), *k.stride(),
        n_rows, pb.heads, pb.group, pb.key_pos, pb.offset, max(n_seg, 1),
        pb.scale, pb.softcap or 1.0, pb.sliding_window or 1, pb.sink_tokens, pb.window, _t_bucket(pb.key_pos),
        **{_camel(name): t for name, t in outputs.items()},
        SEG_PAD=max(16, triton.next_power_of_2(n_seg)), HAS_SEG=pb.segments is not None,
        HAS_SINK=pb.sink_logits is not None,
        N_WIN=n_win, WIN_PAD=max(2, triton.next_power_of_2(n_win)),
        **options,
    )  # fmt: skip

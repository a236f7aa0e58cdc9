"""Fused two-pass Triton kernel for the attention statistics (the CUDA default).

Pass 1, the row pass, is flash attention's forward loop without the value matmul: a program
owns BLOCK_M query rows of one head and walks over the key tiles they can see. The running
max m and normaliser l are kept in registers (online softmax); every row statistic is a sum
of p * x, so it is rescaled by alpha = exp(m_old - m_new) whenever the max grows, exactly as
flash attention rescales its output accumulator. It stores lse and the row statistics.

Pass 2, the column pass, swaps the roles: a program owns BLOCK_N keys of one head and walks
over the query tiles that can see them. It recomputes p = exp(s - lse) from the lse stored
by pass 1, so each column sum is complete inside one program: no atomics.

A third, small pass serves the target-key statistics (A_{i, target[i]}): it needs only the
final lse, so each (row, target) is one gathered key row and one fp32 dot product.

The row pass also sums p over single keys (the first real token, the query's own key) and,
per window w of `recent_windows`, over the band 0 <= a - j < w (recent) and over the non-sink
keys beyond it (distant): masked row sums like the sink mass, one pair per window.

Learned sink logits (GPT-OSS) only touch the row pass's epilogue: the sink adds
exp(sigma - m) to the normaliser, the accumulators are rescaled to the new normaliser, and
the stored lse includes the sink, so the column pass's p = exp(s - lse) is already right.

Grouped-query attention: query head h loads the keys of kv head h // GROUP; nothing is
repeated in memory. On a GPU both passes are autotuned over the config lists below (keyed on
d_head, causality, precision, dtypes and a T bucket; INTERP_TRITON_AUTOTUNE=0 launches one
fixed config instead); under Triton's interpreter (TRITON_INTERPRET=1, used by the CPU
tests) the fixed config runs, and bf16 inputs are upcast on the host because the
interpreter's bf16 `tl.dot` is wrong. On a GPU bf16 runs natively: tl.dot of bf16 tiles
accumulates in fp32, and every statistic is accumulated in fp32.
"""

from __future__ import annotations

import inspect
import os
from typing import no_type_check

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from interp.errors import InterpError
from interp.kernels._problem import Problem, RawStats

__all__ = ["triton_stats", "autotune_enabled"]

_KNOBS = getattr(triton, "knobs", None)  # triton >= 3.4; older versions read the variable directly
_INTERPRET = bool(_KNOBS.runtime.interpret) if _KNOBS else os.environ.get("TRITON_INTERPRET", "0") == "1"
# Triton builds its own jit helpers (tl.zeros, ...) when it is first imported, so the
# interpreter only works when TRITON_INTERPRET=1 was set before that first import.
_INTERPRET_BROKEN = _INTERPRET and not isinstance(tl.zeros, InterpretedFunction)

# -- Autotune search spaces (GPU only), as (BLOCK_M, BLOCK_N, num_warps, num_stages).
#    BLOCK_M: query rows per program, BLOCK_N: keys per tile. The row pass keeps a
#    [BLOCK_M, HEAD_DIM] query tile and [BLOCK_M] accumulators in registers and streams key
#    tiles (flash attention's forward shape: tall BLOCK_M, pipelined key loads); the column
#    pass is the transpose, so it prefers wide BLOCK_N. Configs that do not fit (registers,
#    shared memory) fail to compile and the autotuner drops them. The tuning key is the head
#    size, causality, precision, the input dtypes and a bucket of T (_t_bucket), so a model's
#    layers tune once per length bucket, not once per sequence length. --
_ROW_SPACE = [
    (64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 4), (128, 32, 4, 3),
    (128, 64, 4, 3), (128, 64, 8, 2), (128, 128, 8, 2),
]  # fmt: skip
_COL_SPACE = [
    (64, 64, 4, 2), (64, 64, 4, 3), (32, 64, 4, 4), (32, 128, 4, 3),
    (64, 128, 8, 2), (128, 64, 8, 2), (128, 128, 8, 2),
]  # fmt: skip
_ROW_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in _ROW_SPACE]
_COL_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in _COL_SPACE]
# Used with autotuning off (INTERP_TRITON_AUTOTUNE=0) and under the interpreter, where
# num_warps and num_stages mean nothing and a 64 x 64 tile keeps the CPU tests fast.
_FIXED_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
_T_BUCKETS = (1024, 4096, 16384, 2**30)  # T <= 1k, <= 4k, <= 16k, longer (i32, like the others)


def _t_bucket(n: int) -> int:
    """The upper end of n's length bucket: part of the autotune key, never an input of the math.

    The values are multiples of 16 and never 1, so Triton's integer specialisation compiles
    one kernel for all buckets.
    """
    return next(top for top in _T_BUCKETS if n <= top)


def _prune(configs: list, named_args: dict, **kwargs) -> list:
    """Drop tiles larger than the problem: BLOCK_M beyond the rows, BLOCK_N beyond the keys."""
    args = {**named_args, **kwargs}
    rows = triton.next_power_of_2(max(16, int(args.get("n_rows", args.get("n_queries", 16)))))
    keys = triton.next_power_of_2(max(16, int(args["n_keys"])))
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= rows and c.kwargs["BLOCK_N"] <= keys]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def _autotune_options() -> dict:
    """Prune small problems; cache timings on disk (triton >= 3.2) so one bucket tunes once."""
    options: dict = {"prune_configs_by": {"early_config_prune": _prune}}
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        options["cache_results"] = True
    return options


def autotune_enabled() -> bool:
    """Whether GPU launches autotune (default) or use `_FIXED_CONFIG` (INTERP_TRITON_AUTOTUNE=0)."""
    return os.environ.get("INTERP_TRITON_AUTOTUNE", "1").lower() not in ("0", "false", "off", "no")


@triton.jit
@no_type_check  # the test-time type-check hook must not wrap a Triton kernel
def _softcap(s, cap):
    """cap * tanh(s / cap), via exp of a non-positive number so it cannot overflow."""
    x = s / cap
    t = tl.exp(-2.0 * tl.abs(x))
    th = (1.0 - t) / (1.0 + t)
    return cap * tl.where(x < 0, -th, th)


@triton.jit
@no_type_check  # the test-time type-check hook must not wrap a Triton kernel
def _row_pass(
    Q, K, KeyReal, Seg, Rows, FirstReal, Sinks, Win,  # inputs; Sinks [head] float32, Win [N_WIN] int32
    Lse, Top1, Top1p, Ent, Sink, Dist, Waad, SegOut,  # outputs, [batch, head, n_rows] (+ [n_seg])
    First, Self, Recent, Distant,  # outputs, [batch, head, n_rows] (+ [N_WIN])
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    n_rows, n_heads, group, n_keys, offset, n_seg,
    scale, cap, sliding, sink_tokens, window, t_bucket,  # t_bucket: autotune key only
    HEAD_DIM: tl.constexpr, SEG_PAD: tl.constexpr,
    CAUSAL: tl.constexpr, SOFTCAP: tl.constexpr, SLIDING: tl.constexpr, HAS_SEG: tl.constexpr,
    HAS_SINK: tl.constexpr, PRECISION: tl.constexpr,
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
            labels = tl.load(Seg + b * n_keys + offs_n, mask=key_ok, other=-1)
            onehot = (labels[:, None] == tl.arange(0, SEG_PAD)[None, :]).to(tl.float32)
            acc_seg = acc_seg * alpha[:, None] + tl.dot(p, onehot, input_precision="ieee")
        acc_first = acc_first * alpha + tl.sum(tl.where(offs_n[None, :] == first_real, p, 0.0), 1)
        acc_self = acc_self * alpha + tl.sum(tl.where(lag_i == 0, p, 0.0), 1)
        if N_WIN > 0:
            # -- one masked row sum per window, written into column c of the [BLOCK_M, WIN_PAD]
            #    accumulators (the window count is a constexpr: the loop unrolls) --
            acc_recent = acc_recent * alpha[:, None]
            acc_distant = acc_distant * alpha[:, None]
            for c in tl.static_range(N_WIN):
                w = tl.load(Win + c)
                recent = tl.sum(tl.where((lag_i >= 0) & (lag_i < w), p, 0.0), 1)
                distant = tl.sum(tl.where((lag_i >= w) & (offs_n >= first_real + sink_tokens)[None, :], p, 0.0), 1)
                acc_recent += tl.where(offs_w[None, :] == c, recent[:, None], 0.0)
                acc_distant += tl.where(offs_w[None, :] == c, distant[:, None], 0.0)
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
    tl.store(Ent + out, entropy, mask=row_ok)
    tl.store(Sink + out, acc_sink * inv_l, mask=row_ok)
    tl.store(Dist + out, acc_dist * inv_l, mask=row_ok)
    tl.store(Waad + out, acc_waad * inv_l, mask=row_ok)
    tl.store(First + out, acc_first * inv_l, mask=row_ok)
    tl.store(Self + out, acc_self * inv_l, mask=row_ok)
    if N_WIN > 0:
        win_out = out[:, None] * N_WIN + offs_w[None, :]
        win_ok = row_ok[:, None] & (offs_w < N_WIN)[None, :]
        tl.store(Recent + win_out, acc_recent * inv_l[:, None], mask=win_ok)
        tl.store(Distant + win_out, acc_distant * inv_l[:, None], mask=win_ok)
    if HAS_SEG:
        offs_c = tl.arange(0, SEG_PAD)
        tl.store(
            SegOut + out[:, None] * n_seg + offs_c[None, :],
            acc_seg * inv_l[:, None],
            mask=row_ok[:, None] & (offs_c < n_seg)[None, :],
        )


@triton.jit
@no_type_check  # the test-time type-check hook must not wrap a Triton kernel
def _column_pass(
    Q, K, KeyReal, Lse,  # inputs; Lse [batch, head, query_pos] from the row pass
    Recv, Band,  # outputs, [batch, head, key_pos]: sums over real query rows
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    n_queries, n_heads, group, n_keys, offset,
    scale, cap, sliding, band_lo, band_hi, t_bucket,  # t_bucket: autotune key only
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr, SOFTCAP: tl.constexpr, SLIDING: tl.constexpr,
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
    out = pid_bh * n_keys + offs_n
    tl.store(Recv + out, recv, mask=key_ok)
    tl.store(Band + out, band, mask=key_ok)


@triton.jit
@no_type_check  # the test-time type-check hook must not wrap a Triton kernel
def _target_pass(
    Q, K, KeyReal, Rows, Tgt, Lse,  # inputs; Tgt [batch, n_rows, n_tgt] int32 (-1 = none), Lse [batch, head, n_rows]
    Mass, Score,  # outputs, [batch, head, n_rows, n_tgt]
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    n_rows, n_heads, group, n_keys, offset, n_tgt,
    scale, cap, sliding,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr, SOFTCAP: tl.constexpr, SLIDING: tl.constexpr,
    BLOCK_M: tl.constexpr,
):  # fmt: skip
    # -- the target pass: A_{i, t} = exp(s_it - lse_i) needs only the row's final lse (from
    #    the row pass), so each (row, target) is one gathered key row and one dot product --
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    kv = h // group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < n_rows
    rows = tl.load(Rows + offs_m, mask=row_ok, other=0)
    a = offset + rows
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=row_ok[:, None],
        other=0.0,
    ).to(tl.float32)
    lse = tl.load(Lse + pid_bh * n_rows + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + kv * stride_kh
    for c in range(0, n_tgt):
        t = tl.load(Tgt + (b * n_rows + offs_m) * n_tgt + c, mask=row_ok, other=-1)
        has = t >= 0
        tc = tl.where(has, t, 0)
        kt = tl.load(k_base + tc[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=row_ok[:, None], other=0.0)
        s = tl.sum(q * kt.to(tl.float32), 1) * scale
        if SOFTCAP:
            s = _softcap(s, cap)
        # -- visible: a real key the row may see (causal, window); else the row puts 0 on it --
        vis = has & (tl.load(KeyReal + b * n_keys + tc, mask=row_ok, other=0) != 0)
        if CAUSAL:
            vis = vis & (tc <= a)
        if SLIDING:
            vis = vis & (tc > a - sliding)
        mass = tl.where(vis, tl.exp(s - lse), 0.0)
        out = (pid_bh * n_rows + offs_m) * n_tgt + c
        tl.store(Mass + out, tl.where(has, mass, float("nan")), mask=row_ok)
        tl.store(Score + out, tl.where(has, s, float("nan")), mask=row_ok)


_ROW_KEY = ["HEAD_DIM", "SEG_PAD", "CAUSAL", "PRECISION", "N_WIN", "t_bucket"]
_COL_KEY = ["HEAD_DIM", "CAUSAL", "PRECISION", "t_bucket"]
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
    q, k = pb.q, pb.k
    # bf16 on a GPU: tl.dot takes bf16 tiles and accumulates in fp32, like fp16; everything
    # after the dot is fp32. The interpreter's bf16 tl.dot is wrong, so there it runs in fp32.
    if _INTERPRET and q.dtype == torch.bfloat16:
        q, k = q.float(), k.float()
    head_dim = max(16, triton.next_power_of_2(q.shape[-1]))  # tl.dot wants >= 16, arange a power of 2
    if head_dim != q.shape[-1]:  # zero-padding d_head leaves every q . k unchanged
        q = torch.nn.functional.pad(q, (0, head_dim - q.shape[-1]))
        k = torch.nn.functional.pad(k, (0, head_dim - k.shape[-1]))
    device = q.device
    rows = torch.arange(pb.query_pos, device=device) if pb.columns else pb.rows
    n_rows = rows.numel()
    shape = (pb.batch, pb.heads, n_rows)
    f32 = dict(dtype=torch.float32, device=device)
    lse, top1p, ent, sink, dist, waad, first, self_mass = (torch.empty(shape, **f32) for _ in range(8))
    n_win = len(pb.recent_windows)
    recent, distant = (torch.empty(*shape, max(n_win, 1), **f32) for _ in range(2))
    windows = torch.tensor(pb.recent_windows or (1,), dtype=torch.int32, device=device)
    top1 = torch.empty(shape, dtype=torch.int32, device=device)
    n_seg = pb.n_segments
    seg_out = torch.empty(*shape, max(n_seg, 1), **f32)
    labels = (pb.segments if pb.segments is not None else torch.full((1,), -1, device=device)).to(torch.int32)
    key_real = pb.key_real.to(torch.int8).contiguous()
    first_real = pb.first_real.to(torch.int32)
    sinks = pb.sink_logits if pb.sink_logits is not None else torch.zeros(1, dtype=torch.float64, device=device)
    sinks = sinks.to(torch.float32).contiguous()
    common = dict(
        HEAD_DIM=head_dim,
        CAUSAL=pb.causal,
        SOFTCAP=pb.softcap is not None,
        SLIDING=pb.sliding_window is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else None,  # fp32 data: no tf32 rounding
    )
    row_kernel, column_kernel, fixed = _launchers(config)
    fixed["enable_fp_fusion"] = True  # Triton's default, said explicitly (3.9 warns when it is left unset)
    if n_rows:
        row_kernel[lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]), pb.batch * pb.heads)](
            q, k, key_real, labels.contiguous(), rows.to(torch.int32).contiguous(), first_real, sinks, windows,
            lse, top1, top1p, ent, sink, dist, waad, seg_out,
            first, self_mass, recent, distant,
            *q.stride(), *k.stride(),
            n_rows, pb.heads, pb.group, pb.key_pos, pb.offset, max(n_seg, 1),
            pb.scale, pb.softcap or 1.0, pb.sliding_window or 1, pb.sink_tokens, pb.window, _t_bucket(pb.key_pos),
            SEG_PAD=max(16, triton.next_power_of_2(n_seg)), HAS_SEG=pb.segments is not None,
            HAS_SINK=pb.sink_logits is not None,
            N_WIN=n_win, WIN_PAD=max(2, triton.next_power_of_2(n_win)),
            **common, **fixed,
        )  # fmt: skip
    recv = band = None
    if pb.columns:
        recv = torch.empty(pb.batch, pb.heads, pb.key_pos, **f32)
        band = torch.empty_like(recv)
        column_kernel[lambda meta: (triton.cdiv(pb.key_pos, meta["BLOCK_N"]), pb.batch * pb.heads)](
            q, k, key_real, lse,
            recv, band,
            *q.stride(), *k.stride(),
            pb.query_pos, pb.heads, pb.group, pb.key_pos, pb.offset,
            pb.scale, pb.softcap or 1.0, pb.sliding_window or 1, pb.band[0], pb.band[1], _t_bucket(pb.key_pos),
            **common, **fixed,
        )  # fmt: skip
        keep = pb.rows
        kept = (t[:, :, keep] for t in (lse, top1, top1p, ent, sink, dist, waad, first, self_mass, recent, distant))
        lse, top1, top1p, ent, sink, dist, waad, first, self_mass, recent, distant = kept
        seg_out = seg_out[:, :, keep]
    target_mass = target_score = None
    if pb.targets is not None:
        n_req, n_tgt = pb.targets.shape[1], pb.targets.shape[2]
        target_mass = torch.empty(pb.batch, pb.heads, n_req, n_tgt, **f32)
        target_score = torch.empty_like(target_mass)
        if n_req and n_tgt:
            block = 16 if n_req <= 16 else 64
            _target_pass[(triton.cdiv(n_req, block), pb.batch * pb.heads)](
                q, k, key_real, pb.rows.to(torch.int32).contiguous(), pb.targets.to(torch.int32).contiguous(),
                lse.contiguous(),
                target_mass, target_score,
                *q.stride(), *k.stride(),
                n_req, pb.heads, pb.group, pb.key_pos, pb.offset, n_tgt,
                pb.scale, pb.softcap or 1.0, pb.sliding_window or 1,
                HEAD_DIM=head_dim, CAUSAL=pb.causal, SOFTCAP=pb.softcap is not None,
                SLIDING=pb.sliding_window is not None, BLOCK_M=block, enable_fp_fusion=True,
            )  # fmt: skip
    return RawStats(
        target_mass=target_mass,
        target_score=target_score,
        lse=lse,
        top1=top1.to(torch.int64),
        top1p=top1p,
        entropy=ent,
        sink=sink,
        dist=dist,
        waad=waad,
        seg=seg_out[..., :n_seg] if pb.segments is not None else None,
        recv_sum=recv,
        band_sum=band,
        first=first,
        self_mass=self_mass,
        recent=recent if n_win else None,
        distant=distant if n_win else None,
    )

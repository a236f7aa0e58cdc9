"""The Triton target-key pass (A_{i, target[i]}) and the soft-cap helper both Triton modules use.

The target statistics need only each row's final lse (from the row pass of `_triton.py`), so
each (row, target) is one gathered key row and one fp32 dot product: no tile, no second walk
over the keys.
"""

from __future__ import annotations

from typing import no_type_check

import torch
import triton
import triton.language as tl
from torch import Tensor

from interp.kernels._problem import Problem

__all__ = ["target_pass"]


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


def target_pass(pb: Problem, q: Tensor, k: Tensor, key_real: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """(target, target_score) [batch, head, n_rows, n_targets] float32 of `pb`'s requested rows.

    Args:
        q, k: the (padded, upcast) inputs the row pass ran on.
        key_real: [batch, key_pos] int8.
        lse: [batch, head, n_rows] the requested rows' normalisers from the row pass.
    """
    assert pb.targets is not None
    n_req, n_tgt = pb.targets.shape[1], pb.targets.shape[2]
    mass = torch.empty(pb.batch, pb.heads, n_req, n_tgt, dtype=torch.float32, device=q.device)
    score = torch.empty_like(mass)
    if n_req and n_tgt:
        block = 16 if n_req <= 16 else 64
        _target_pass[(triton.cdiv(n_req, block), pb.batch * pb.heads)](
            q, k, key_real, pb.rows.to(torch.int32).contiguous(), pb.targets.to(torch.int32).contiguous(),
            lse.contiguous(),
            mass, score,
            *q.stride(), *k.stride(),
            n_req, pb.heads, pb.group, pb.key_pos, pb.offset, n_tgt,
            pb.scale, pb.softcap or 1.0, pb.sliding_window or 1,
            HEAD_DIM=q.shape[-1], CAUSAL=pb.causal, SOFTCAP=pb.softcap is not None,
            SLIDING=pb.sliding_window is not None, BLOCK_M=block, enable_fp_fusion=True,
        )  # fmt: skip
    return mass, score

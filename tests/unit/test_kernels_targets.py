"""The target-key statistic (A_{i, target[i]} and s_{i, target[i]}) of every backend vs float64.

The expected values come from a dense attention matrix built here, in float64, from q and k
(not from `interp.kernels._reference`); the tolerance is the flash-attention rule of the other
kernel tests: error vs float64 <= 2 x the error of the same computation in the input dtype +
2e-5. The Triton kernel runs under Triton's interpreter in a TRITON_INTERPRET=1 subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typecheck import unchecked

from interp.errors import InterpError
from interp.kernels import attention_stats

TOL = 2e-5


def _dense(q, k, kw: dict, rows, targets, dtype):
    """(mass, score) [batch, head, n_rows, n_tgt] from the materialised attention in `dtype`."""
    b, h, nq, _ = q.shape
    nk = k.shape[2]
    kk = k.to(dtype).repeat_interleave(h // k.shape[1], dim=1)
    s = (q.to(dtype) @ kk.transpose(-1, -2)) * kw["scale"]
    if kw.get("softcap"):
        s = kw["softcap"] * torch.tanh(s / kw["softcap"])
    a_pos = torch.arange(nk - nq, nk)[:, None]
    j = torch.arange(nk)[None, :]
    vis = torch.ones(nq, nk, dtype=torch.bool)
    if kw.get("causal", True):
        vis &= j <= a_pos
    if kw.get("sliding_window"):
        vis &= j > a_pos - kw["sliding_window"]
    real = kw.get("key_padding_mask", torch.ones(b, nk, dtype=torch.bool))
    vis = vis[None, None] & real[:, None, None, :]
    masked = s.masked_fill(~vis, float("-inf"))
    if kw.get("sink_logits") is not None:
        sink = kw["sink_logits"].to(dtype)[None, :, None, None].expand(b, h, nq, 1)
        a = torch.softmax(torch.cat([masked, sink], -1), -1)[..., :-1]
    else:
        a = torch.softmax(masked, -1)
    t3 = targets if targets.ndim == 3 else targets[..., None]
    idx = t3.clamp(min=0)[:, None].expand(-1, h, -1, -1)
    mass = a[:, :, rows].gather(-1, idx)
    score = s[:, :, rows].gather(-1, idx)
    none = (t3 < 0)[:, None] | ~real[:, nk - nq :][:, rows][:, None, :, None]
    mass, score = mass.masked_fill(none, float("nan")), score.masked_fill(none, float("nan"))
    if targets.ndim == 2:
        mass, score = mass[..., 0], score[..., 0]
    return mass, score


def _case(seed: int, *, t: int, n_q: int, heads: int, kv: int, batch: int, dtype, n_tgt: int | None, **kw):
    gen = torch.Generator().manual_seed(seed)
    d = 24
    q = (torch.randn(batch, heads, n_q, d, generator=gen) * 2.0).to(dtype)
    k = torch.randn(batch, kv, t, d, generator=gen).to(dtype)
    kw = {"scale": d**-0.5, **kw}
    rows = kw.pop("rows", None)
    rows_t = torch.arange(n_q) if rows is None else torch.as_tensor(rows)
    shape = (batch, rows_t.numel()) + (() if n_tgt is None else (n_tgt,))
    targets = torch.randint(-1, t, shape, generator=gen)
    a = (t - n_q + rows_t)[None, :]
    if n_tgt is None:  # mostly visible targets: a key at or before the row
        targets[:, ::2] = (a - torch.randint(0, 8, a.shape, generator=gen)).clamp(min=-1)[:, ::2]
    else:
        targets[..., 0] = (a - 1).clamp(min=-1)
    if rows is not None:
        kw["query_rows"] = rows_t
    return q, k, kw, rows_t, targets


CASES = {
    "mha-t100": dict(t=100, n_q=100, heads=4, kv=4, batch=1, n_tgt=None),
    "gqa3-t130-3targets": dict(t=130, n_q=130, heads=6, kv=2, batch=2, n_tgt=3),
    "gqa8-padding": dict(t=77, n_q=77, heads=8, kv=1, batch=2, n_tgt=2, pad=(0, 20)),
    "kv-cache-rows": dict(t=90, n_q=40, heads=4, kv=2, batch=1, n_tgt=2, rows=[0, 5, 5, 39]),
    "rows-no-columns": dict(t=70, n_q=70, heads=2, kv=1, batch=1, n_tgt=None, rows=[3, 69, 10], columns=False),
    "window-softcap": dict(t=129, n_q=129, heads=4, kv=2, batch=1, n_tgt=2, sliding_window=9, softcap=5.0),
    "sinks-noncausal": dict(t=65, n_q=65, heads=4, kv=4, batch=1, n_tgt=1, sinks=True, causal=False),
}


def _build(name: str, dtype, seed: int = 0):
    spec = dict(CASES[name])
    pad = spec.pop("pad", None)
    sinks = spec.pop("sinks", False)
    q, k, kw, rows, targets = _case(seed, dtype=dtype, **spec)
    if pad is not None:
        kw["key_padding_mask"] = torch.arange(spec["t"])[None, :] >= torch.tensor(pad)[:, None]
    if sinks:
        kw["sink_logits"] = torch.randn(spec["heads"], generator=torch.Generator().manual_seed(seed + 1)) * 2
    return q, k, kw, rows, targets


def _check(name: str, backend: str, dtype) -> None:
    q, k, kw, rows, targets = _build(name, dtype)
    got = attention_stats(q, k, backend=backend, targets=targets, **kw)
    ref_m, ref_s = _dense(q, k, kw, rows, targets, torch.float64)
    base_m, base_s = _dense(q, k, kw, rows, targets, dtype)
    if dtype == torch.float16:  # the same-dtype baseline: fp16 scores, fp32 softmax (no fp16 softmax on CPU)
        base_m, base_s = _dense(q.float(), k.float(), kw, rows, targets, torch.float32)
        base_s = base_s.half().double()
    for label, g, r, bb in (("target", got.target, ref_m, base_m), ("target_score", got.target_score, ref_s, base_s)):
        assert g.shape == r.shape, (label, g.shape, r.shape)
        g, bb = g.double(), bb.double()
        assert torch.equal(g.isnan(), r.isnan()), f"{label}: NaN pattern differs"
        err = (g - r).abs().nan_to_num(0.0)
        bound = 2 * (bb - r).abs().nan_to_num(0.0) + TOL + TOL * r.abs().nan_to_num(0.0)
        if dtype == torch.float16:
            bound = bound + 2e-3 * (1 + r.abs().nan_to_num(0.0))  # fp16 inputs: tl.dot vs elementwise rounding
        assert (err <= bound).all(), f"{label}: error {err.max():.3g} ({name}, {backend}, {dtype})"
    # the statistic is not trivially zero: some visible targets carry real mass
    assert got.target.nan_to_num(0.0).max() > 1e-3


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_targets_match_float64(name: str, backend: str) -> None:
    _check(name, backend, torch.float32)


@pytest.mark.parametrize("name", ["gqa3-t130-3targets", "gqa8-padding"])
def test_torch_half_targets_match_float64(name: str) -> None:
    _check(name, "torch", torch.float16)


def test_target_equals_one_column_of_the_attention_row() -> None:
    """Summing the target mass over every key of a row gives 1 (no sink): every key is a target."""
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 2, 12, 8, generator=gen), torch.randn(1, 1, 12, 8, generator=gen)
    targets = torch.arange(12).expand(12, 12)[None].clone()  # row i: every key 0..11
    st_ = attention_stats(q, k, scale=8**-0.5, targets=targets, backend="torch")
    assert torch.allclose(st_.target.sum(-1), torch.ones(1, 2, 12), atol=1e-5)
    assert (st_.target[0, :, 3, 4:] == 0).all()  # keys after the row are invisible: mass 0


def test_bad_targets_raise() -> None:
    q, k = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    with pytest.raises(InterpError, match="targets out of range"):
        attention_stats(q, k, scale=1.0, targets=torch.full((1, 10), 10))
    with pytest.raises(InterpError, match="one entry per requested query row"):
        attention_stats(q, k, scale=1.0, targets=torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InterpError, match="integer key indices"):  # a user's process: no test-time type checker
        unchecked(attention_stats)(q, k, scale=1.0, targets=torch.zeros(1, 10))


# ---------------------------------------------------------------- Triton (interpreter on CPU)


def _interpreter_active() -> bool:
    if os.environ.get("TRITON_INTERPRET") != "1" or importlib.util.find_spec("triton") is None:
        return False
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


interpreted = pytest.mark.skipif(not _interpreter_active(), reason="runs in the TRITON_INTERPRET=1 subprocess")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.skipif(_interpreter_active(), reason="this process already runs the interpreter tests itself")
def test_triton_targets_under_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider", "-k", "interpreted"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@interpreted
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_interpreted_triton_targets_match_float64(name: str, dtype) -> None:
    _check(name, "triton", dtype)


@interpreted
def test_interpreted_triton_targets_long() -> None:
    """T = 512, GQA 3, left padding, 4 targets per row: many key tiles before the target pass."""
    CASES["long"] = dict(t=512, n_q=512, heads=3, kv=1, batch=1, n_tgt=4)
    try:
        _check("long", "triton", torch.float32)
    finally:
        del CASES["long"]

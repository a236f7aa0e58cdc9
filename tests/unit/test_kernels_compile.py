"""The Triton kernels compile for a real GPU (Hopper, sm_90) without one: ahead-of-time, on CPU.

The interpreter tests (test_kernels.py) check the arithmetic, but the interpreter accepts
programs that the GPU compiler rejects (loop-carried types that change, unsupported dot
shapes, too much shared memory). `triton.compile` with an explicit target runs the real
pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin with the bundled ptxas) on this machine, so a
kernel that would fail on an H100/H200 fails here first. Skipped when Triton is missing or
this process runs the interpreter (its kernels are then interpreted functions).
"""

from __future__ import annotations

import importlib.util
import inspect
import os

import pytest


def _why_not() -> str | None:
    """Why this module cannot compile ahead of time here (None if it can)."""
    if importlib.util.find_spec("triton") is None:
        return "needs triton"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "this process runs Triton's interpreter"
    import triton
    from triton.compiler import ASTSource

    if "constexprs" not in inspect.signature(ASTSource).parameters:  # the ASTSource API of triton >= 3.3
        return f"triton {triton.__version__}'s ASTSource takes other arguments than this test writes"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))

H100_SHARED_BYTES = 227 * 1024  # opt-in shared memory per block on sm_90
ALL_FEATURES = dict(CAUSAL=True, SOFTCAP=True, SLIDING=True, HAS_WEIGHT=True)
ROW_FEATURES = dict(HAS_SEG=True, HAS_SINK=True, SEG_PAD=16, N_WIN=3, WIN_PAD=4)


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    """Triton type of every kernel argument, by the kernels' naming convention."""
    pointers = {
        "Q": dtype,
        "K": dtype,
        "KeyReal": "i8",
        "Labels": "i32",
        "Rows": "i32",
        "FirstReal": "i32",
        "Top1": "i32",
        "Win": "i32",
    }
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name[0].isupper():  # tensors are capitalised; outputs are fp32 unless listed
            sig[name] = "*" + pointers.get(name, "fp32")
        else:
            sig[name] = "fp32" if name in ("scale", "cap") else "i32"
    return sig


def _compile(fn, dtype: str, config: tuple[int, int, int, int], head_dim: int, **flags):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_m, block_n, warps, stages = config
    precision = "ieee" if dtype == "fp32" else None  # as triton_stats chooses
    constexprs = dict(HEAD_DIM=head_dim, PRECISION=precision, BLOCK_M=block_m, BLOCK_N=block_n, **flags)
    source = ASTSource(fn, _signature(fn, dtype, constexprs), constexprs=constexprs)
    options = dict(num_warps=warps, num_stages=stages, enable_fp_fusion=True)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def _fixed() -> tuple[int, int, int, int]:
    from interp.kernels._triton_tune import _FIXED_CONFIG as c

    return c["BLOCK_M"], c["BLOCK_N"], c["num_warps"], c["num_stages"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_both_passes_compile_for_sm90_with_every_feature(dtype: str) -> None:
    """The fixed config (autotuning off) with soft-cap, window, segments and sinks, d_head 128."""
    from interp.kernels._triton import _column_pass, _row_pass

    row = _compile(_row_pass, dtype, _fixed(), 128, **ALL_FEATURES, **ROW_FEATURES)
    col = _compile(_column_pass, dtype, _fixed(), 128, **ALL_FEATURES)
    for kernel in (row, col):
        assert kernel.asm["cubin"], "no cubin produced"
        assert 0 < kernel.metadata.shared <= H100_SHARED_BYTES, kernel.metadata.shared
    if dtype != "fp32":  # fp32 runs ieee dots (no tf32 rounding): FMAs, not tensor cores
        assert "mma" in row.asm["ptx"], "q k^T of half-precision tiles did not lower to tensor-core mma"


@pytest.mark.parametrize("which", ["row", "column"])
def test_every_autotune_config_compiles_for_sm90(which: str) -> None:
    """Every entry of the search space, bf16 (GPT-OSS's dtype), d_head 64 and 128, within shared memory."""
    from interp.kernels import _triton, _triton_tune

    fn, space = (
        (_triton._row_pass, _triton_tune._ROW_SPACE)
        if which == "row"
        else (_triton._column_pass, _triton_tune._COL_SPACE)
    )
    flags = dict(
        CAUSAL=True,
        SOFTCAP=False,
        SLIDING=False,
        HAS_WEIGHT=False,
        **(dict(HAS_SEG=False, HAS_SINK=True, SEG_PAD=16, N_WIN=2, WIN_PAD=2) if which == "row" else {}),
    )
    assert len(space) == len(set(space)) >= 4
    for config in space:
        for head_dim in (64, 128):
            kernel = _compile(fn, "bf16", config, head_dim, **flags)
            assert 0 < kernel.metadata.shared <= H100_SHARED_BYTES, (config, head_dim, kernel.metadata.shared)


def test_autotune_key_buckets_and_pruning(monkeypatch: pytest.MonkeyPatch) -> None:
    """T maps to 4 buckets (one tuning each); tiles larger than the problem are pruned; the env switch works."""
    from interp.kernels import _triton
    from interp.kernels import _triton_tune as tune

    assert [tune._t_bucket(n) for n in (1, 1024, 1025, 4096, 16384, 16385, 131072)] == [
        1024, 1024, 4096, 4096, 16384, 2**30, 2**30,
    ]  # fmt: skip
    assert all(b % 16 == 0 and b < 2**31 for b in tune._T_BUCKETS)  # one i32 specialisation for all

    def tiles(configs):
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs}

    small = tune._prune(tune._ROW_CONFIGS, {"n_rows": 40, "n_keys": 40})
    assert tiles(small) == {(64, 64), (64, 32)}
    assert tune._prune(tune._ROW_CONFIGS, {"n_rows": 5000, "n_keys": 5000}) == tune._ROW_CONFIGS
    narrow = tune._prune(tune._COL_CONFIGS, {"n_queries": 3000, "n_keys": 50})
    assert tiles(narrow) == {(64, 64), (32, 64), (128, 64)}
    assert tune._prune(tune._COL_CONFIGS, {"n_queries": 8, "n_keys": 8})  # never empty

    monkeypatch.setenv("INTERP_TRITON_AUTOTUNE", "0")
    assert not _triton.autotune_enabled() and _triton._launchers(None)[2]["BLOCK_M"] == 64
    monkeypatch.setenv("INTERP_TRITON_AUTOTUNE", "1")
    assert _triton.autotune_enabled() and _triton._launchers(None)[0] is _triton._row_tuned
    assert _triton._launchers({"BLOCK_M": 32, "BLOCK_N": 128})[2] == {"BLOCK_M": 32, "BLOCK_N": 128}

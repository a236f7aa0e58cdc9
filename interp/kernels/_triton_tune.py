"""Launch configurations of the Triton statistics kernels: the autotune search spaces and their key.

On a GPU both passes of `_triton.py` are autotuned over the config lists below, keyed on the
head size, causality, precision, the input dtypes and a bucket of T, so a model's layers tune
once per length bucket. With INTERP_TRITON_AUTOTUNE=0, and under Triton's interpreter, one
fixed config runs instead. Nothing here launches a kernel.
"""

from __future__ import annotations

import inspect
import os

import triton

__all__ = ["autotune_enabled"]

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

#!/usr/bin/env bash
# Issue 16, "The GPU kernel on a real GPU", in one short run (about 5-8 minutes on an H100/H200):
#   1. make sure interp and its test dependencies import (pip install -e '.[dev]' -c constraints.txt
#      otherwise, with the machine's own torch and triton pinned so a CUDA build is kept);
#   2. the GPU tests: pytest -m gpu (Triton vs the float64 reference on fuzzed shapes, padding,
#      sliding window, soft-cap, sink logits, fp32/fp16/bf16, every autotune config, the
#      autotuned path, memory linear in T);
#   3. benchmarks/attn_stats.py at heads 32 / kv 8 / d 128 for T = 4k, 16k, 32k, 64k, 128k:
#      Triton statistics vs SDPA's flash forward vs eager (where it fits), time ratio and peak
#      memory, written to the attn_stats_gpu block of benchmarks/RESULTS.md with the device name,
#      torch/triton/CUDA versions and the test summary;
#   4. the CPU kernel tests (interpreter, sm_90 compile) against this machine's triton, if time is left.
# Logs and a copy of RESULTS.md go to $GPU_CHECK_OUT (default: $OUT when set, else
# out/gpu_check), so they come back from a remote machine.
#
#   bash benchmarks/gpu_check.sh             # on a CUDA machine
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: checks this script's logic on CPU with tiny
#                                            # sizes and Triton's interpreter; writes only a scratch
#                                            # copy of RESULTS.md (never GPU numbers into the real one)
#   INTERP_GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh   # same as --dry-run
#
# Environment: PYTHON (default: .venv/bin/python if its torch sees CUDA, else python3),
# GPU_CHECK_LENGTHS (default 4k,16k,32k,64k,128k), GPU_CHECK_DTYPE (float16), GPU_CHECK_OUT,
# GPU_CHECK_TEST_TIMEOUT (240 s), GPU_CHECK_BENCH_TIMEOUT (300 s), GPU_CHECK_SKIP_TESTS=1,
# GPU_CHECK_SKIP_BENCH=1, GPU_CHECK_SKIP_CPU_TESTS=1, GPU_CHECK_DEADLINE (450 s: step 4 is skipped
# when the run has already taken longer).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

DRY=0
[ "${INTERP_GPU_CHECK_CPU:-0}" = "1" ] && DRY=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --skip-tests) GPU_CHECK_SKIP_TESTS=1 ;;
    --skip-bench) GPU_CHECK_SKIP_BENCH=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (use --dry-run, --skip-tests, --skip-bench)" >&2; exit 2 ;;
  esac
done

OUT_DIR="${GPU_CHECK_OUT:-${OUT:-$ROOT/out/gpu_check}}"
mkdir -p "$OUT_DIR"
STARTED=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - STARTED ))s] $*" | tee -a "$OUT_DIR/gpu_check.log"; }
: > "$OUT_DIR/gpu_check.log"

# ---------------------------------------------------------------- 0. which python, which torch
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && { [ "$DRY" = 1 ] || .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; }; then
    PYTHON=.venv/bin/python
  fi
fi
if ! TORCH_INFO=$("$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())" 2>&1); then
  say "no torch under $PYTHON: install a CUDA build of torch first (or set PYTHON=...)"; exit 2
fi
read -r TORCH_VERSION CUDA_VERSION HAS_CUDA <<<"$TORCH_INFO"
say "python $PYTHON, torch $TORCH_VERSION, CUDA $CUDA_VERSION, device available: $HAS_CUDA, dry run: $DRY"
if [ "$DRY" = 0 ] && [ "$HAS_CUDA" != "True" ]; then
  say "torch sees no CUDA device here: run on a GPU machine, or pass --dry-run to check this script on CPU"; exit 2
fi
if [ "$DRY" = 0 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$OUT_DIR/gpu_check.log"
fi

# ---------------------------------------------------------------- 1. interp and test dependencies
NEEDED="import interp.kernels, pytest, hypothesis, triton, jaxtyping, pandas"
if ! "$PYTHON" -c "$NEEDED" 2>/dev/null; then
  say "interp or a test dependency does not import: pip install -e '.[dev]' -c constraints.txt (torch/triton pinned as installed)"
  PINS="$OUT_DIR/constraints.gpu_check.txt"
  cp constraints.txt "$PINS"
  echo "torch==$TORCH_VERSION" >>"$PINS"  # keep this machine's (CUDA) torch
  TRITON_VERSION=$("$PYTHON" -c "import triton; print(triton.__version__)" 2>/dev/null) && echo "triton==$TRITON_VERSION" >>"$PINS"
  if ! timeout 300 "$PYTHON" -m pip install -q -c "$PINS" -e ".[dev]" >"$OUT_DIR/pip.log" 2>&1; then
    say "pip install failed (offline?), see pip.log; trying the source tree on PYTHONPATH"
  fi
fi
if ! "$PYTHON" -c "import interp" 2>/dev/null; then
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! MISSING=$("$PYTHON" -c "$NEEDED" 2>&1); then
  say "still missing: $(echo "$MISSING" | tail -1)"; exit 3
fi

FAILED=0
TEST_SUMMARY="not run"
SCRATCH=""
if [ "$DRY" = 1 ]; then
  SCRATCH="$OUT_DIR/RESULTS.dry-run.md"
  cp benchmarks/RESULTS.md "$SCRATCH"
  cp benchmarks/RESULTS.md "$OUT_DIR/RESULTS.before.md"
fi

# ---------------------------------------------------------------- 2. GPU tests
if [ "${GPU_CHECK_SKIP_TESTS:-0}" != 1 ]; then
  say "GPU tests: pytest -m gpu (timeout ${GPU_CHECK_TEST_TIMEOUT:-240} s)"
  timeout "${GPU_CHECK_TEST_TIMEOUT:-240}" "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider -rs --durations=15 \
    tests/unit/test_kernels_gpu.py tests/unit/test_kernels.py >"$OUT_DIR/tests_gpu.log" 2>&1
  rc=$?
  TEST_SUMMARY=$(grep -E "[0-9]+ (passed|failed|skipped|error)" "$OUT_DIR/tests_gpu.log" | tail -1 | tr -d '=' | xargs)
  [ "$rc" = 124 ] && TEST_SUMMARY="timed out after ${GPU_CHECK_TEST_TIMEOUT:-240} s (${TEST_SUMMARY:-no summary})"
  say "GPU tests: exit $rc, ${TEST_SUMMARY:-no summary line}"
  if [ "$rc" != 0 ]; then FAILED=1; tail -40 "$OUT_DIR/tests_gpu.log"; fi
  if [ "$DRY" = 1 ] && ! grep -q "skipped" "$OUT_DIR/tests_gpu.log"; then
    say "dry run: expected the GPU tests to skip cleanly without CUDA"; FAILED=1
  fi
fi

# ---------------------------------------------------------------- 3. benchmark -> RESULTS.md
if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
  if [ "$DRY" = 1 ]; then
    BENCH=(--device cpu --shapes 2/1/64 --lengths "${GPU_CHECK_LENGTHS:-128,200}" --dtype float32 --repeats 2
           --timeout 120 --markdown-out "$SCRATCH" --title "## attn_stats on GPU -- DRY RUN on CPU, not GPU numbers")
    export TRITON_INTERPRET=1  # the benchmark's triton method runs in the interpreter on CPU
  else
    BENCH=(--device cuda --shapes 32/8/128 --lengths "${GPU_CHECK_LENGTHS:-4k,16k,32k,64k,128k}"
           --dtype "${GPU_CHECK_DTYPE:-float16}" --repeats 3 --timeout 180 --markdown-out benchmarks/RESULTS.md
           --title "## attn_stats on GPU (issue 16)")
  fi
  say "benchmark: attn_stats.py ${BENCH[*]} (timeout ${GPU_CHECK_BENCH_TIMEOUT:-300} s)"
  timeout "${GPU_CHECK_BENCH_TIMEOUT:-300}" "$PYTHON" benchmarks/attn_stats.py "${BENCH[@]}" \
    --methods triton,sdpa,eager --section attn_stats_gpu \
    --note "GPU tests on this machine (pytest -m gpu, same run): ${TEST_SUMMARY:-no summary}." \
    --note "Written by benchmarks/gpu_check.sh; triton = attention_stats(backend='triton') with every row and column statistic, sdpa = the flash-attention forward alone." \
    2>&1 | tee "$OUT_DIR/bench.log"
  rc=${PIPESTATUS[0]}
  say "benchmark: exit $rc"
  [ "$rc" != 0 ] && FAILED=1
  if [ "$DRY" = 1 ]; then
    unset TRITON_INTERPRET
    if grep -q "<!-- attn_stats_gpu:begin -->" "$SCRATCH" && grep -q "| 2/1/64 | 200 | triton |" "$SCRATCH" \
       && grep -q "<!-- attn_stats:begin -->" "$SCRATCH"; then
      say "dry run: the attn_stats_gpu block was written to $SCRATCH, the CPU block kept"
    else
      say "dry run: the attn_stats_gpu block is missing or incomplete in $SCRATCH"; FAILED=1
    fi
    if ! cmp -s benchmarks/RESULTS.md "$OUT_DIR/RESULTS.before.md"; then
      say "dry run: benchmarks/RESULTS.md changed, it must not"; FAILED=1
    fi
  fi
fi

# ---------------------------------------------------------------- 4. CPU kernel tests on this triton
ELAPSED=$(( $(date +%s) - STARTED ))
if [ "$DRY" = 0 ] && [ "${GPU_CHECK_SKIP_CPU_TESTS:-0}" != 1 ] && [ "$ELAPSED" -gt "${GPU_CHECK_DEADLINE:-450}" ]; then
  say "CPU kernel tests skipped: ${ELAPSED} s spent, past GPU_CHECK_DEADLINE=${GPU_CHECK_DEADLINE:-450} s"
elif [ "$DRY" = 0 ] && [ "${GPU_CHECK_SKIP_CPU_TESTS:-0}" != 1 ]; then
  say "CPU kernel tests (interpreter subprocess, sm_90 compile) with this machine's triton"
  timeout 180 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not gpu" tests/unit/test_kernels.py \
    tests/unit/test_kernels_compile.py tests/unit/test_kernels_errors.py >"$OUT_DIR/tests_cpu.log" 2>&1
  rc=$?
  say "CPU kernel tests: exit $rc, $(grep -E "[0-9]+ (passed|failed)" "$OUT_DIR/tests_cpu.log" | tail -1 | tr -d '=' | xargs)"
  [ "$rc" != 0 ] && { FAILED=1; tail -30 "$OUT_DIR/tests_cpu.log"; }
fi

[ "$DRY" = 0 ] && cp benchmarks/RESULTS.md "$OUT_DIR/RESULTS.md"
say "done in $(( $(date +%s) - STARTED )) s; logs in $OUT_DIR; $([ "$FAILED" = 0 ] && echo OK || echo FAILED)"
exit "$FAILED"

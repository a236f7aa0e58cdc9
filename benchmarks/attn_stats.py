"""Benchmark `interp.kernels.attention_stats` against dense eager code and SDPA.

    .venv/bin/python benchmarks/attn_stats.py [--quick] [--no-write]          # CPU (make bench)
    .venv/bin/python benchmarks/attn_stats.py --threads 1 --shapes 9/3/64 --lengths 8k,16k \
        --methods torch,windowed --sliding-window 512 --section attn_stats_window   # windowed layers
    python benchmarks/attn_stats.py --device cuda --shapes 32/8/128 \
        --lengths 4k,16k,32k,64k,128k --methods triton,sdpa,eager --section attn_stats_gpu

Per shape (heads, kv_head, d_head) and sequence length T, each method runs in a fresh
subprocess so its peak memory is its own:

  eager     softmax(QK^T) materialised, then the statistics as plain reductions
  torch     attention_stats(backend="torch"), the row-chunked streaming path
  compiled  the streaming path with its per-chunk function under torch.compile
            (first-call compile time reported apart)
  triton    attention_stats(backend="triton") (CUDA; on CPU only under TRITON_INTERPRET=1)
  windowed  attention_stats(backend="torch", sliding_window=W) (only with --sliding-window W):
            a sliding-window layer, whose cost should grow as T * W, not T^2; the report
            adds its time over the full-attention torch path's
  sdpa      F.scaled_dot_product_attention forward on the same q, k (v = k), for scale; on
            CUDA restricted to the flash-attention backend (GQA natively, or k repeated first
            when this torch's flash kernel has no GQA: said in the note)

Time is the median of a few calls after a warm-up (for triton the warm-up call includes
compiling and autotuning). Peak extra memory is, on CPU, the growth of the process's peak
RSS (getrusage maxrss) over the inputs during the first call (for `compiled`, whose compile
dominates maxrss, a 1 ms RSS sampler during a timed call); on GPU,
torch.cuda.max_memory_allocated over the inputs during the timed calls (after the warm-up,
so the autotuner's benchmarking buffers do not count). CPU children run under a 14 GiB
address-space cap, so "OOM" on CPU means "needs more than that"; on GPU, eager is skipped
where its dense [head, T, T] tensors would not fit in the device's memory. Results go to
the `--section` block of `--markdown-out` (benchmarks/RESULTS.md); other blocks are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SHAPES = [(9, 3, 64), (32, 8, 128)]  # (heads, kv_head, d_head): SmolLM2-135M, Llama-3-8B
CPU_T = [512, 1024, 2048, 4096]
GPU_T = [4096, 16384, 32768, 65536, 131072]  # issue 16
GPU_SHAPES = [(32, 8, 128)]  # Llama-3-8B
METHODS = ["eager", "torch", "compiled", "triton", "sdpa", "windowed"]
GPU_METHODS = ["triton", "sdpa", "eager"]  # the streaming torch path is a CPU method
CPU_CAP_BYTES = 14 * 2**30
EAGER_TENSORS = 6  # [head, T, T] float32 tensors eager_stats holds at its peak (s, p, entr, products)


# ----------------------------------------------------------------------------- the methods


def eager_stats(q, k, scale, window=10, band=(10, 100), sink_tokens=1):
    """What one writes without a kernel: the dense pattern, then one reduction per statistic."""
    import torch

    t = q.shape[2]
    kr = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # HF repeat_kv
    s = (q.float() @ kr.float().transpose(-1, -2)) * scale
    i, j = torch.arange(t, device=q.device)[:, None], torch.arange(t, device=q.device)[None, :]
    s = s.masked_fill(j > i, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1)
    top1p, top1 = p.max(-1)
    entropy = torch.special.entr(p).sum(-1)
    lag = (i - j).float()
    dist = (p * lag).sum(-1)
    waad = (p * lag.clamp(max=window)).sum(-1)
    sink = p[..., :sink_tokens].sum(-1)
    recv = p.sum(-2)
    recv_mean = recv / (t - torch.arange(t, device=q.device))
    in_band = (lag >= band[0]) & (lag <= band[1])
    band_mean = (p * in_band).sum(-2) / in_band.sum(0).clamp(min=1)
    return lse, top1, top1p, entropy, dist, waad, sink, recv, recv_mean, band_mean


def make_method(name, q, k, scale, sliding_window=None):
    import torch

    from interp.kernels import attention_stats

    if name == "windowed":
        if sliding_window is None:
            raise ValueError("the windowed method needs --sliding-window W")
        return lambda: attention_stats(q, k, scale=scale, backend="torch", sliding_window=sliding_window)
    if name == "eager":
        return lambda: eager_stats(q, k, scale)
    if name in ("torch", "triton"):
        return lambda: attention_stats(q, k, scale=scale, backend=name)
    if name == "compiled":
        from interp.kernels import _torch
        from interp.kernels._problem import prepare
        from interp.kernels.stats import _finalize

        tile_fn = torch.compile(_torch.tile_stats, dynamic=True)
        defaults = dict(causal=True, softcap=None, sliding_window=None, sink_tokens=1, window=10, band=(10, 100))
        nothing = dict(segments=None, n_segments=None, key_padding_mask=None, query_rows=None, columns=True)

        def run():
            problem = prepare(q, k, scale=scale, **defaults, **nothing)
            return _finalize(problem, _torch.torch_stats(problem, tile_fn=tile_fn))

        return run
    if name == "sdpa":
        return sdpa_method(q, k, scale)
    raise ValueError(name)


def sdpa_method(q, k, scale):
    """SDPA's forward (v = k); on CUDA only its flash-attention backend may run.

    Returns (fn, note): when this torch's flash kernel refuses grouped-query inputs, k is
    repeated to all heads once, outside the timed call, and the note says so.
    """
    import torch

    f = torch.nn.functional.scaled_dot_product_attention
    if not q.is_cuda:
        return lambda: f(q, k, k, is_causal=True, scale=scale, enable_gqa=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def flash(kk, gqa):
        def run():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return f(q, kk, kk, is_causal=True, scale=scale, enable_gqa=gqa)

        return run

    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # probe on a short slice
            f(q[:, :, :64], k[:, :, :64], k[:, :, :64], is_causal=True, scale=scale, enable_gqa=True)
        return flash(k, True)
    except RuntimeError:
        run = flash(k.repeat_interleave(q.shape[1] // k.shape[1], dim=1), False)
        run.note = "flash without GQA: k repeated before the call"
        return run


# ----------------------------------------------------------------------------- one measurement (child)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _sampled_peak(fn) -> tuple[float, int]:
    """Run fn once while a thread samples RSS every millisecond; (seconds, peak RSS)."""
    peak, done = [_rss()], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    done.set()
    thread.join()
    return elapsed, peak[0]


def child(
    method: str,
    heads: int,
    kv: int,
    d: int,
    t: int,
    device: str,
    repeats: int,
    threads: int,
    dtype_name: str,
    sliding_window: int | None = None,
) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "cpu":
        resource.setrlimit(resource.RLIMIT_AS, (CPU_CAP_BYTES, CPU_CAP_BYTES))
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, t, d, device=device, dtype=dtype, generator=gen)
    k = torch.randn(1, kv, t, d, device=device, dtype=dtype, generator=gen)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict = {}
    try:
        fn = make_method(method, q, k, d**-0.5, sliding_window)
        if getattr(fn, "note", None):
            out["note"] = fn.note
        base_rss = _rss()
        t0 = time.perf_counter()
        fn()
        sync()
        first = time.perf_counter() - t0
        if device == "cuda":  # peak over the timed calls: autotuning's own buffers stay out
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        elif method != "compiled":
            out["peak_extra"] = max(0, _maxrss() - base_rss)
        times = []
        budget = time.perf_counter() + 20.0
        while len(times) < repeats and (not times or time.perf_counter() < budget):
            if method == "compiled" and device == "cpu" and not times:
                before = _rss()
                elapsed, peak = _sampled_peak(fn)
                out["peak_extra"] = max(0, peak - before)
            else:
                t0 = time.perf_counter()
                fn()
                sync()
                elapsed = time.perf_counter() - t0
            times.append(elapsed)
        out["time"] = statistics.median(times)
        out["first"] = first
        if device == "cuda":
            out["peak_extra"] = torch.cuda.max_memory_allocated() - base
        if method == "compiled":
            out["compile"] = max(0.0, first - out["time"])
        out["status"] = "ok"
        if device == "cuda" and method == "triton":
            out["config"] = triton_configs()
    except (torch.OutOfMemoryError, MemoryError) as e:
        out = {"status": "OOM", "detail": str(e)[:200]}
    except RuntimeError as e:
        oom = re.search(r"out of memory|can't allocate memory|not enough memory", str(e), re.I)
        out = {"status": "OOM" if oom else "failed", "detail": str(e).splitlines()[0][:200]}
    except Exception as e:  # noqa: BLE001 - a failing compile is a result to report
        out = {"status": "failed", "detail": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out


def triton_configs() -> str:
    """The configs the autotuner chose for the two passes (empty when autotuning was off)."""
    from interp.kernels import _triton

    chosen = []
    for name, kernel in (("row", _triton._row_tuned), ("col", _triton._column_tuned)):
        best = getattr(kernel, "best_config", None)
        if best is not None:
            kw = best.kwargs
            chosen.append(f"{name} {kw['BLOCK_M']}x{kw['BLOCK_N']} w{best.num_warps} s{best.num_stages}")
    return ", ".join(chosen)


# ----------------------------------------------------------------------------- driver


def measure(method, heads, kv, d, t, device, repeats, threads, dtype, timeout, sliding_window=None) -> dict:
    args = [method, heads, kv, d, t, device, repeats, threads, dtype, sliding_window]
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"no result within {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        killed = done.returncode in (-9, 137)
        return {"status": "OOM" if killed else "failed", "detail": (done.stderr or done.stdout)[-300:]}
    return json.loads(lines[-1])


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores ({platform.machine()})"


def fmt_mem(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def parse_lengths(text: str) -> list[int]:
    """'4k,16k,131072' -> [4096, 16384, 131072] (k = 1024)."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        out.append(int(part[:-1]) * 1024 if part.endswith("k") else int(part))
    if not out or min(out) < 1:
        raise SystemExit(f"--lengths needs positive lengths, got {text!r}")
    return out


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """'32/8/128,9/3/64' -> [(32, 8, 128), (9, 3, 64)] as heads/kv_head/d_head."""
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        heads, kv, d = (int(x) for x in part.split("/"))
        if heads % kv:
            raise SystemExit(f"--shapes {part}: heads must be a multiple of kv_head")
        shapes.append((heads, kv, d))
    return shapes


def software_versions() -> str:
    import torch

    parts = [f"torch {torch.__version__}"]
    try:
        import triton

        parts.append(f"triton {triton.__version__}")
    except ImportError:
        parts.append("no triton")
    if torch.version.cuda:
        parts.append(f"CUDA {torch.version.cuda}")
    return ", ".join(parts)


def eager_fits(heads: int, t: int, device: str) -> str | None:
    """Why eager is skipped at this size on CUDA (its dense tensors exceed the device), or None."""
    if device != "cuda":
        return None  # the CPU child's address-space cap reports OOM by itself
    import torch

    need = EAGER_TENSORS * heads * t * t * 4
    total = torch.cuda.get_device_properties(0).total_memory
    if need > 0.9 * total:
        return f"skipped: needs ~{need / 2**30:,.0f} GiB, device has {total / 2**30:,.0f} GiB"
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T in 512, 1024 only, one timed call")
    ap.add_argument("--no-write", action="store_true", help="print only; leave the markdown file alone")
    ap.add_argument("--methods", help=f"comma-separated, of {','.join(METHODS)} (default: all that run on the device)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when available")
    ap.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                    help="input dtype (auto: float32 on CPU, float16 on CUDA)")  # fmt: skip
    ap.add_argument("--lengths", help="comma-separated T, k = 1024 (e.g. 4k,16k,32k,64k,128k)")
    ap.add_argument("--shapes", help="comma-separated heads/kv_head/d_head (default 9/3/64,32/8/128)")
    ap.add_argument("--repeats", type=int, help="timed calls per measurement (default 3, 1 with --quick)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement subprocess")
    ap.add_argument("--markdown-out", type=Path, default=RESULTS, help="markdown file to update (RESULTS.md)")
    ap.add_argument("--section", help="name of the block to write (default attn_stats, attn_stats_gpu on CUDA)")
    ap.add_argument("--title", help="heading of the block (default: ## <section>)")
    ap.add_argument("--note", action="append", default=[], help="a line to add under the table (repeatable)")
    ap.add_argument("--sliding-window", type=int, help="W of the windowed method (a sliding-window layer)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))), flush=True)
        return

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    interpreter = os.environ.get("TRITON_INTERPRET") == "1"
    if args.methods:  # triton on CPU only when asked for, under the interpreter
        methods = [m for m in args.methods.split(",") if m != "triton" or device == "cuda" or interpreter]
        if unknown := set(methods) - set(METHODS):
            raise SystemExit(f"--methods: unknown {sorted(unknown)}; use {','.join(METHODS)}")
    else:
        methods = GPU_METHODS if device == "cuda" else [m for m in METHODS if m not in ("triton", "windowed")]
    if "windowed" in methods and not args.sliding_window:
        raise SystemExit("--methods windowed needs --sliding-window W")
    dtype = args.dtype if args.dtype != "auto" else ("float16" if device == "cuda" else "float32")
    if args.lengths:
        lengths = parse_lengths(args.lengths)
    else:
        lengths = [512, 1024] if args.quick else (GPU_T if device == "cuda" else CPU_T)
    shapes = parse_shapes(args.shapes) if args.shapes else (GPU_SHAPES if device == "cuda" else SHAPES)
    repeats = args.repeats or (1 if args.quick else 3)
    section = args.section or ("attn_stats_gpu" if device == "cuda" else "attn_stats")
    load0 = os.getloadavg()
    started = time.time()
    rows, oom_at = [], {}
    for heads, kv, d in shapes:
        for t in lengths:
            res = {}
            for m in methods:
                skip = eager_fits(heads, t, device) if m == "eager" else None
                if (heads, kv, d, m) in oom_at:
                    res[m] = {"status": "skipped (OOM at smaller T)"}
                elif skip:
                    res[m] = {"status": skip}
                else:
                    res[m] = measure(
                        m, heads, kv, d, t, device, repeats, args.threads, dtype, args.timeout, args.sliding_window
                    )
                    if res[m]["status"] == "OOM":
                        oom_at[(heads, kv, d, m)] = t
                print(f"heads={heads} kv={kv} d={d} T={t} {m}: {res[m]}", flush=True)
            rows.append(((heads, kv, d, t), res))
    run = dict(
        device=device, dtype=dtype, lengths=lengths, load=(load0, os.getloadavg()), elapsed=time.time() - started,
        threads=args.threads or torch.get_num_threads(), interpreter=interpreter, argv=argv,
        sliding_window=args.sliding_window,
    )  # fmt: skip
    report = render(rows, methods, oom_at, run, title=args.title or f"## {section}", notes=args.note)
    print(report)
    if not args.no_write:
        write_section(report, args.markdown_out, section)
        print(f"wrote the {section} block of {args.markdown_out}")


def render(rows, methods, oom_at, run, title: str, notes: list[str]) -> str:
    device, lengths = run["device"], run["lengths"]
    load0, load1 = run["load"]
    command = shlex.join(
        ["benchmarks/attn_stats.py", *_shown_args(run["argv"] if run["argv"] is not None else sys.argv[1:])]
    )
    where = device_name(device) + (" (Triton interpreter)" if device == "cpu" and run["interpreter"] else "")
    out = [
        title,
        "",
        f"`{command}` on **{where}**, {software_versions()}, "
        + (f"{run['threads']} torch thread(s), " if device == "cpu" else "")
        + f"{run['dtype']} inputs, batch 1, causal, no padding or segments; "
        f"{time.strftime('%Y-%m-%d')}, {run['elapsed'] / 60:.1f} min. "
        f"Load average {load0[0]:.1f} at start, {load1[0]:.1f} at end"
        + (
            " (the machine was shared: absolute times are noisy, ratios within a row less so)."
            if device == "cpu"
            else "."
        ),
        "",
    ]
    baseline = "flash" if device == "cuda" else "SDPA"
    if "triton" in methods and "sdpa" in methods:
        out += summary_table(rows, baseline) + [""]
    out += [
        f"time = median seconds per call; mem = peak extra MiB over the inputs; ratios are time / {baseline}'s "
        "time, time / eager's time and mem / eager's mem.",
        "",
        f"| heads/kv/d | T | method | time (s) | mem (MiB) | x {baseline} time | x eager time | x eager mem | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (heads, kv, d, t), res in rows:
        ref, eager = res.get("sdpa", {}), res.get("eager", {})
        for m in methods:
            r = res[m]
            if r.get("status") != "ok":
                note = r.get("status", "?") + (f": {_one_line(r['detail'])[:80]}" if r.get("detail") else "")
                out.append(f"| {heads}/{kv}/{d} | {t} | {m} | - | - | - | - | - | {note} |")
                continue
            out.append(
                f"| {heads}/{kv}/{d} | {t} | {m} | {r['time']:.4f} | {fmt_mem(r.get('peak_extra'))} | "
                f"{_ratio(r['time'], ref.get('time'))} | {_ratio(r['time'], eager.get('time'))} | "
                f"{_ratio(r.get('peak_extra'), eager.get('peak_extra'))} | {_note(m, r)} |"
            )
    if "windowed" in methods and "torch" in methods:
        out += ["", *window_table(rows, run.get("sliding_window"))]
    out += ["", "Out of memory (first T that failed, per method and shape):"]
    if not oom_at:
        out.append(f"none up to T = {max(lengths)}.")
    for (heads, kv, d, m), t in sorted(oom_at.items()):
        out.append(f"- {heads}/{kv}/{d} {m}: T = {t}")
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def _shown_args(argv: list[str]) -> list[str]:
    """The command-line arguments that change the numbers (not where or how they are written)."""
    hidden, out, skip = {"--note", "--title", "--markdown-out", "--section", "--no-write"}, [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in hidden:
            skip = "=" not in arg and arg != "--no-write"
        else:
            out.append(arg)
    return out


def summary_table(rows, baseline: str) -> list[str]:
    """One line per (shape, T): Triton against flash/SDPA (and eager where it ran)."""
    out = [
        f"| heads/kv/d | T | triton (s) | {baseline} (s) | triton / {baseline} | triton mem (MiB) | "
        f"{baseline} mem (MiB) | eager (s) | eager mem (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (heads, kv, d, t), res in rows:
        tri, ref, eager = res.get("triton", {}), res.get("sdpa", {}), res.get("eager", {})

        def cell(r, key="time"):  # a time, or why there is none; a memory, or "-"
            if r.get("status") != "ok":
                return r.get("status", "-").split(":")[0] if key == "time" else "-"
            return f"{r[key]:.4f}" if key == "time" else fmt_mem(r.get(key))

        out.append(
            f"| {heads}/{kv}/{d} | {t} | {cell(tri)} | {cell(ref)} | {_ratio(tri.get('time'), ref.get('time'))} | "
            f"{cell(tri, 'peak_extra')} | {cell(ref, 'peak_extra')} | {cell(eager)} | {cell(eager, 'peak_extra')} |"
        )
    return out


def window_table(rows, window) -> list[str]:
    """One line per (shape, T): the sliding-window layer's time against full attention's."""
    out = [
        f'Sliding window W = {window} against full causal attention, both `backend="torch"`, same q and k:',
        "",
        "| heads/kv/d | T | full (s) | windowed (s) | windowed / full | T / W |",
        "|---|---|---|---|---|---|",
    ]
    for (heads, kv, d, t), res in rows:
        full, win = res.get("torch", {}), res.get("windowed", {})
        out.append(
            f"| {heads}/{kv}/{d} | {t} | {full.get('time', float('nan')):.3f} | {win.get('time', float('nan')):.3f} | "
            f"{_ratio(win.get('time'), full.get('time'))} | {t / window:.0f} |"
        )
    return out


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def _note(method: str, r: dict) -> str:
    parts = []
    if "compile" in r:
        parts.append(f"compile {r['compile']:.1f} s")
    if method == "triton" and "first" in r:
        parts.append(f"first call {r['first']:.1f} s (with compiling and autotuning)")
    if r.get("config"):
        parts.append(r["config"])
    if r.get("note"):
        parts.append(r["note"])
    return "; ".join(parts)


def write_section(report: str, path: Path = RESULTS, section: str = "attn_stats") -> None:
    """Replace the `section` block of `path` (or append it); every other block stays as it is."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{report}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()

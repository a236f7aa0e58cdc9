"""Benchmark `interp.kernels.attention_stats` against dense eager code and SDPA.

    .venv/bin/python benchmarks/attn_stats.py [--quick] [--no-write]

Per shape (heads, kv_head, d_head) and sequence length T, each method runs in a fresh
subprocess so its peak memory is its own:

  eager     softmax(QK^T) materialised, then the statistics as plain reductions
  torch     attention_stats(backend="torch"), the row-chunked streaming path
  compiled  the streaming path with its per-chunk function under torch.compile
            (first-call compile time reported apart)
  triton    attention_stats(backend="triton") (CUDA only)
  sdpa      F.scaled_dot_product_attention forward on the same q, k (v = k), for scale

Time is the median of a few calls after a warm-up. Peak extra memory is, on CPU, the growth
of the process's peak RSS (getrusage maxrss) over the inputs during the first call (for
`compiled`, whose compile dominates maxrss, a 1 ms RSS sampler during a timed call); on GPU,
torch.cuda.max_memory_allocated over the inputs. CPU children run under a 14 GiB address-space
cap, so "OOM" on CPU means "needs more than that". Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
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
GPU_T = CPU_T + [8192, 16384, 32768]
METHODS = ["eager", "torch", "compiled", "triton", "sdpa"]
CPU_CAP_BYTES = 14 * 2**30
BEGIN, END = "<!-- attn_stats:begin -->", "<!-- attn_stats:end -->"


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


def make_method(name, q, k, scale):
    import torch

    from interp.kernels import attention_stats

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
        f = torch.nn.functional.scaled_dot_product_attention
        return lambda: f(q, k, k, is_causal=True, scale=scale, enable_gqa=True)
    raise ValueError(name)


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


def child(method: str, heads: int, kv: int, d: int, t: int, device: str, repeats: int, threads: int) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "cpu":
        resource.setrlimit(resource.RLIMIT_AS, (CPU_CAP_BYTES, CPU_CAP_BYTES))
    dtype = torch.float32 if device == "cpu" else torch.float16
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, t, d, device=device, dtype=dtype, generator=gen)
    k = torch.randn(1, kv, t, d, device=device, dtype=dtype, generator=gen)
    fn = make_method(method, q, k, d**-0.5)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict = {}
    try:
        if device == "cuda":
            sync()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        base_rss = _rss()
        t0 = time.perf_counter()
        fn()
        sync()
        first = time.perf_counter() - t0
        if device == "cuda":
            out["peak_extra"] = torch.cuda.max_memory_allocated() - base
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
        if method == "compiled":
            out["compile"] = max(0.0, first - out["time"])
        out["status"] = "ok"
    except (torch.OutOfMemoryError, MemoryError) as e:
        out = {"status": "OOM", "detail": str(e)[:200]}
    except RuntimeError as e:
        oom = re.search(r"out of memory|can't allocate memory|not enough memory", str(e), re.I)
        out = {"status": "OOM" if oom else "failed", "detail": str(e).splitlines()[0][:200]}
    except Exception as e:  # noqa: BLE001 - a failing compile is a result to report
        out = {"status": "failed", "detail": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out


# ----------------------------------------------------------------------------- driver


def measure(method, heads, kv, d, t, device, repeats, threads) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([method, heads, kv, d, t, device, repeats, threads])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T in 512, 1024 only, one timed call")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))), flush=True)
        return

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    methods = [m for m in args.methods.split(",") if m != "triton" or device == "cuda"]
    lengths = [512, 1024] if args.quick else (GPU_T if device == "cuda" else CPU_T)
    repeats = 1 if args.quick else 3
    load0 = os.getloadavg()
    started = time.time()
    rows, oom_at = [], {}
    for heads, kv, d in SHAPES:
        for t in lengths:
            res = {}
            for m in methods:
                if (heads, kv, d, m) in oom_at:
                    res[m] = {"status": "skipped (OOM at smaller T)"}
                    continue
                res[m] = measure(m, heads, kv, d, t, device, repeats, args.threads)
                if res[m]["status"] == "OOM":
                    oom_at[(heads, kv, d, m)] = t
                print(f"heads={heads} kv={kv} d={d} T={t} {m}: {res[m]}", flush=True)
            rows.append(((heads, kv, d, t), res))
    elapsed = time.time() - started
    threads = args.threads or torch.get_num_threads()
    report = render(rows, methods, oom_at, device, lengths, load0, os.getloadavg(), elapsed, args.quick, threads)
    print(report)
    if not args.no_write:
        write_section(report)


def render(rows, methods, oom_at, device, lengths, load0, load1, elapsed, quick, threads) -> str:
    dtype = "float32" if device == "cpu" else "float16"
    out = [
        "## attn_stats",
        "",
        f"`benchmarks/attn_stats.py{' --quick' if quick else ''}` on **{device_name(device)}**, "
        f"{threads} torch thread(s), {dtype} inputs, batch 1, "
        f"causal, no padding or segments; {time.strftime('%Y-%m-%d')}, {elapsed / 60:.0f} min. "
        f"Load average {load0[0]:.1f} at start, {load1[0]:.1f} at end (the machine was shared: "
        "absolute times are noisy, ratios within a row less so).",
        "",
        "time = median seconds per call; mem = peak extra MiB over the inputs; ratios are time / SDPA's "
        "time, time / eager's time and mem / eager's mem.",
        "",
        "| heads/kv/d | T | method | time (s) | mem (MiB) | x SDPA time | x eager time | x eager mem | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (heads, kv, d, t), res in rows:
        ref, eager = res.get("sdpa", {}), res.get("eager", {})
        for m in methods:
            r = res[m]
            if r.get("status") != "ok":
                note = r.get("status", "?") + (f": {r['detail'][:80]}" if r.get("detail") else "")
                out.append(f"| {heads}/{kv}/{d} | {t} | {m} | - | - | - | - | - | {note} |")
                continue

            def ratio(a, b):
                return f"{a / b:.2f}" if a is not None and b else "-"

            note = f"compile {r['compile']:.1f} s" if "compile" in r else ""
            out.append(
                f"| {heads}/{kv}/{d} | {t} | {m} | {r['time']:.3f} | {fmt_mem(r.get('peak_extra'))} | "
                f"{ratio(r['time'], ref.get('time'))} | {ratio(r['time'], eager.get('time'))} | "
                f"{ratio(r.get('peak_extra'), eager.get('peak_extra'))} | {note} |"
            )
    out += ["", "Out of memory (first T that failed, per method and shape):"]
    if not oom_at:
        out.append(f"none up to T = {max(lengths)}.")
    for (heads, kv, d, m), t in sorted(oom_at.items()):
        out.append(f"- {heads}/{kv}/{d} {m}: T = {t}")
    return "\n".join(out) + "\n"


def write_section(report: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{report}{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

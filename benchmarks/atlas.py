"""`interp atlas` wall time, with a per-condition breakdown that lets an idle-machine time be estimated.

Two parts, one command::

    python benchmarks/atlas.py --length 2048 --out /tmp/atlas_bench/smol2k      # run, then break down
    python benchmarks/atlas.py --read runs/atlas2k                               # break down a finished run
    python benchmarks/atlas.py --shared 1024                                     # shared vs unshared, side by side
    python benchmarks/atlas.py --write-texts /tmp/atlas_texts.txt                # texts for two windows at 32k

1. The run: the real CLI (``interp atlas``, default selectors profile, razor, random x 3 seeds, budgets
   0.25/0.5/0.75) in a subprocess under ``/usr/bin/time -v``: wall time, CPU time, peak RSS, and
   the load average (``/proc/loadavg``) before and after. The machine is shared, so wall time
   alone says little: the breakdown reads each unit's wall and CPU seconds from the run's resume
   logs (``samples.jsonl``: profiled windows; ``causal.jsonl``: the unedited pass and each
   condition, with ``seconds`` and ``cpu_seconds``) and estimates the idle wall time as CPU
   seconds / threads (2 on the 2-core machine: torch keeps both busy in a forward pass).
2. ``--shared T``: what the causal check shares between conditions, measured side by side on
   the embedded model at T tokens for one condition (the profile's lowest 25% of KV heads by a
   fixed score, here the layer index: the edits start at layer 8): the held-out loss from the first
   edited layer on (`interp.hooks.start_at_layer`) vs the full pass, and the three needle
   prompts through the shared-prefix walk vs one pass each. Prints the seconds and the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()[1:] if x.strip()]


def breakdown(folder: Path, threads: int) -> None:
    """Per-unit wall / CPU seconds of a run folder and the idle estimate (CPU / threads)."""
    causal = _records(folder / "causal.jsonl")
    print(f"\n{folder}: {len(causal)} causal units")
    print("| unit | wall s | CPU s | idle estimate s |\n| --- | --- | --- | --- |")
    total_cpu = 0.0
    for rec in causal:
        cpu = float(rec.get("cpu_seconds", float("nan")))
        total_cpu += cpu
        print(f"| {rec['id']} | {rec.get('seconds', float('nan')):.0f} | {cpu:.0f} | {cpu / threads:.0f} |")
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    timings = run.get("timings") or {}
    print(
        f"\ncausal units: {total_cpu:.0f} CPU s -> about {total_cpu / threads / 60:.1f} min on an idle {threads}-core machine"
    )
    if timings:
        print(f"run.json timings: {json.dumps(timings)}")


def run_cli(length: int, out: Path, extra: list[str]) -> None:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "interp", "atlas", "--length", str(length), "--out", str(out),
           "--fresh", *extra]  # fmt: skip
    print("$", " ".join(cmd[2:]), f"\nload before: {load()}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stats = {k.strip(): v.strip() for k, _, v in (ln.partition(": ") for ln in done.stderr.splitlines()[-30:]) if v}
    print(f"exit {done.returncode}; wall {wall:.0f} s; user {stats.get('User time (seconds)')} s; "
          f"system {stats.get('System time (seconds)')} s; peak RSS {int(stats.get('Maximum resident set size (kbytes)', 0)) / 2**20:.2f} GiB; "
          f"load after: {load()}")  # fmt: skip


def shared(length: int) -> None:
    """The shared parts of one condition against doing everything per condition, side by side."""
    import torch

    import interp
    from interp.analyses.retrieval import RetrievalConfig
    from interp.experiments._atlas_causal import DEPTHS, token_nll
    from interp.experiments.retrieval import needle_recall, prepare_samples, teacher_answers
    from interp.hooks import window_attention

    lm = interp.load_model()
    ids = torch.randint(100, 20000, (1, length), generator=torch.Generator().manual_seed(0))
    window = min(1024, length // 2)
    first = 8
    edits = [window_attention(layer, h, window, 4) for layer in range(first, 30, 3) for h in range(9)]
    _, resid = token_nll(lm, ids, 1, (), capture_at=[first])
    t0 = time.perf_counter()
    a, _ = token_nll(lm, ids, 1024, edits)
    t1 = time.perf_counter()
    b, _ = token_nll(lm, ids, 1024, edits, start=(first, resid[first]))
    t2 = time.perf_counter()
    print(f"load {load()}; held-out loss at {length}: full pass {t1 - t0:.1f} s, from layer {first} {t2 - t1:.1f} s "
          f"(x{(t1 - t0) / (t2 - t1):.2f}; max |diff| {max(abs(x - y) for x, y in zip(a, b)):.1e} nats)")  # fmt: skip
    rconfig = RetrievalConfig(lengths=(length,), depths=DEPTHS, mask=False)
    samples, _ = prepare_samples(lm, rconfig)
    samples = samples[: len(DEPTHS)]
    t0 = time.perf_counter()
    teacher_answers(lm, samples, edits=edits)
    t1 = time.perf_counter()
    for s in samples:
        needle_recall(lm, s, rconfig, edits)
    t2 = time.perf_counter()
    print(
        f"needles at 3 depths: shared prefixes {t1 - t0:.1f} s, one pass each {t2 - t1:.1f} s (x{(t2 - t1) / (t1 - t0):.2f})"
    )


_SKIP = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "lib2to3",
    "pydoc_data",
    "ensurepip",
    "venv",
}


def write_texts(path: Path, max_chars: int = 3_000_000) -> None:
    """A texts file (``---``-separated) longer than the shipped corpus, for two windows at 32k:
    the shipped corpus first, then the docstrings of every public member of the standard library's
    public modules (in name order)."""
    import importlib
    import inspect
    import warnings

    from interp.datasets.haystack import stdlib_sentences
    from interp.datasets.texts import default_texts

    parts = [" ".join(stdlib_sentences()), *default_texts()]
    size = sum(map(len, parts))
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP or size > max_chars:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 (platform modules that do not import here)
            continue
        docs = [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(module) if not _.startswith("_")]
        text = "\n\n".join(d for d in docs if len(d) > 200)
        if text:
            parts.append(text)
            size += len(text)
    path.write_text("\n---\n".join(p.replace("\n---\n", "\n") for p in parts) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(parts)} texts, {size} characters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=Path("/tmp/atlas_bench/run"))
    parser.add_argument("--read", type=Path, default=None, help="break down a finished run folder (no run)")
    parser.add_argument("--shared", type=int, default=None, help="measure the shared parts at this length (no run)")
    parser.add_argument("--threads", type=int, default=2, help="cores of the idle machine the estimate is for")
    parser.add_argument("--write-texts", type=Path, default=None, help="write a longer texts file (for 32k) and stop")
    args, extra = parser.parse_known_args()
    if args.write_texts:
        write_texts(args.write_texts)
        return
    if args.shared:
        shared(args.shared)
        return
    if args.read is None:
        run_cli(args.length, args.out, extra)
    breakdown(args.read or args.out, args.threads)


if __name__ == "__main__":
    main()

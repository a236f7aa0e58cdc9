"""`run_with_cache(..., stop_at_layer=N)` against the full pass, side by side in one run.

    python benchmarks/early_stop.py                      # embedded SmolLM2, 1024 tokens, stop at 6
    python benchmarks/early_stop.py --tokens 2048 --stop 6 --repeats 5

Each repeat times the early-stopped call and the full call back to back (default sites q, k, v,
z, resid_pre of every layer that runs); the minimum of each is compared, wall and CPU seconds,
with the load average before and after (the machine may be shared). The target: the stopped
pass under 0.4x the full one at stop_at_layer=6 of SmolLM2's 30 layers (6/30 of the blocks and
no [pos, vocab] logits).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--stop", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import interp
    from interp.datasets.texts import default_texts

    lm = interp.load_model(args.model)
    pieces = lm.tokens("\n\n".join(default_texts()))
    while len(pieces) < args.tokens:
        pieces = pieces + pieces
    ids = torch.tensor([lm.with_bos(pieces)[: args.tokens]])
    lm.run_with_cache(ids[:, :64], stop_at_layer=args.stop)  # warm up
    before = load()
    stopped, full = [], []
    for _ in range(args.repeats):
        stopped.append(timed(lambda: lm.run_with_cache(ids, stop_at_layer=args.stop)))
        full.append(timed(lambda: lm.run_with_cache(ids)))
    s_wall, s_cpu = min(w for w, _ in stopped), min(c for _, c in stopped)
    f_wall, f_cpu = min(w for w, _ in full), min(c for _, c in full)
    print(
        f"{lm.name}: {args.tokens} tokens, {lm.arch.n_layers} layers, min of {args.repeats}; load {before} -> {load()}"
    )
    print("| call | wall s | CPU s |\n| --- | --- | --- |")
    print(f"| run_with_cache(stop_at_layer={args.stop}) | {s_wall:.3f} | {s_cpu:.3f} |")
    print(f"| run_with_cache (full pass) | {f_wall:.3f} | {f_cpu:.3f} |")
    print(f"ratio stopped / full: wall {s_wall / f_wall:.3f}x, CPU {s_cpu / f_cpu:.3f}x (target < 0.4x)")


if __name__ == "__main__":
    main()

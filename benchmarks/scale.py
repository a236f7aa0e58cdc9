"""Benchmark: speed-up of 2 ranks over 1 on the same work (`interp score sinks`).

Runs the same command three ways, side by side, each into a fresh folder:
  1 rank x 1 thread   `torchrun --nproc-per-node 1 -m interp ...` with OMP_NUM_THREADS=1
  2 ranks x 1 thread  `torchrun --nproc-per-node 2 -m interp ...` (interp.distributed, gloo)
  1 rank x 2 threads  the same one process with 2 torch threads (what one process gets anyway)
and prints wall seconds (model load and start-up included, as a user sees them), the speed-up of
2 ranks over 1, and whether the tables of the runs are identical (they must be, between runs of
the same thread count). On a 2-core machine expect less than 2x: both ranks share the cores
with start-up, the merge, and whatever else runs there.

    .venv/bin/python benchmarks/scale.py --texts 8 --length 256
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(nproc: int, threads: int, out: Path, args: list[str]) -> float:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "interp",
        "score",
        "sinks",
        *args,
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--texts", type=int, default=8, help="texts scanned (the units of work)")
    parser.add_argument("--length", type=int, default=256, help="tokens per text")
    args = parser.parse_args()

    import pandas as pd

    work = ["--max-texts", str(args.texts), "--length", str(args.length)] + (
        ["--model", args.model] if args.model else []
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(
            1, 1, tmp / "warm", ["--max-texts", "1", "--length", "16"] + work[4:]
        )  # weights cached, files in page cache
        load = os.getloadavg()[0]
        one = run(1, 1, tmp / "one", work)
        two = run(2, 1, tmp / "two", work)
        threads = run(1, 2, tmp / "threads", work)
        same = all(
            pd.read_csv(tmp / "one" / name).equals(pd.read_csv(tmp / "two" / name))
            for name in ("heads.csv", "sinks.csv", "layers.csv", "token_types.csv")
        )
    print(
        f"interp score sinks, {args.texts} texts x {args.length} tokens, {os.cpu_count()} CPUs, load average {load:.1f} at start"
    )
    print("| run | wall (s) | speed-up over 1 rank x 1 thread |")
    print("|---|---|---|")
    for name, seconds in (("1 rank x 1 thread", one), ("2 ranks x 1 thread", two), ("1 rank x 2 threads", threads)):
        print(f"| {name} | {seconds:.1f} | {one / seconds:.2f}x |")
    print(f"2 ranks over 1: {one / two:.2f}x; tables of 1 and 2 ranks identical: {same}")


if __name__ == "__main__":
    main()

"""Long context on CPU: `interp score sinks` and `interp score retrieval` on Gemma 3 270M at 16k and 32k.

One command runs everything (about an hour on 2 shared cores)::

    nice python benchmarks/long_context.py                       # 16k and 32k, both commands
    python benchmarks/long_context.py --lengths 4096 --commands sinks   # a quick look

Each run is the real CLI in a subprocess under ``/usr/bin/time -v``: wall time and peak resident
memory (the whole process: weights, KV cache, masks, statistics). Printed as a markdown table,
next to what eager attention would need for its probabilities alone at the same length:
18 layers x 4 heads x T^2 x 4 bytes (float32 [head, T, T] per layer, all layers kept, as
``output_attentions=True`` returns them); at T = 32768 that is 288 GiB.

``--breakdown T`` shows where one forward pass spends its time (torch profiler, one thread):
the model's own dense masked SDPA on the 15 local layers against interp's routed path, which runs
local layers per query block over the keys in reach only (`interp.hooks._window_blocks`).

The texts: the shipped sink texts and Python stdlib docstrings (written to ``--out``), packed into
one window of T tokens for sinks and used as the haystack for retrieval (one needle, depth 0.5,
no masking check: one teacher-forced pass over T tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

EAGER_LAYERS, EAGER_HEADS = 18, 4  # Gemma 3 270M


def eager_gib(t: int) -> float:
    """Memory of eager attention probabilities for every layer: layers x heads x T^2 x 4 bytes, in GiB."""
    return EAGER_LAYERS * EAGER_HEADS * t * t * 4 / 2**30


def write_inputs(out: Path) -> tuple[Path, Path, Path]:
    """(texts file for sinks, haystack file, needles file) under ``out``."""
    from interp.datasets.haystack import stdlib_sentences

    out.mkdir(parents=True, exist_ok=True)
    stdlib = " ".join(stdlib_sentences())
    shipped = (Path(__file__).resolve().parents[1] / "interp" / "data" / "sink_texts.txt").read_text()
    texts = out / "texts.txt"
    texts.write_text(shipped.rstrip() + "\n---\n" + stdlib + "\n")
    haystack = out / "haystack.txt"
    haystack.write_text(stdlib + "\n\n" + shipped.replace("\n---\n", "\n\n"))
    needles = out / "needles.jsonl"
    needles.write_text(
        json.dumps(
            {
                "id": "soup",
                "needle": "The secret ingredient in Grandma Olga's soup is a spoonful of smoked paprika.",
                "question": "What is the secret ingredient in Grandma Olga's soup?",
                "answer": "a spoonful of smoked paprika",
            }
        )
        + "\n"
    )
    return texts, haystack, needles


def command(name: str, t: int, model: str, out: Path, inputs: tuple[Path, Path, Path]) -> list[str]:
    texts, haystack, needles = inputs
    interp = [sys.executable, "-m", "interp.cli"]
    if name == "sinks":
        return interp + [
            "score",
            "sinks",
            "--model",
            model,
            "--texts",
            str(texts),
            "--pack",
            "--length",
            str(t),
            "--max-texts",
            "1",
            "--out",
            str(out),
            "--fresh",
        ]
    return interp + [
        "score",
        "retrieval",
        "--model",
        model,
        "--lengths",
        str(t),
        "--depths",
        "0.5",
        "--needles",
        str(needles),
        "--haystack",
        str(haystack),
        "--no-mask",
        "--out",
        str(out),
        "--fresh",
    ]


def timed(argv: list[str]) -> dict:
    """Run ``argv`` under /usr/bin/time -v; wall seconds, peak RSS (GiB), exit code, stderr tail."""
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *argv], capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}
    )
    err = proc.stderr
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", err)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    secs = 0.0
    if wall:
        for part in wall.group(1).split(":"):
            secs = secs * 60 + float(part)
    return {
        "exit": proc.returncode,
        "wall_s": round(secs, 1),
        "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2) if rss else None,
        "user_s": float(re.search(r"User time \(seconds\): (\S+)", err).group(1)) if "User time" in err else None,
        "tail": err[-1500:] if proc.returncode else "",
    }


def breakdown(t: int, model: str) -> None:
    """One forward pass at T, the model's own path vs interp's routed path: profiler self-times."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from interp.hooks import streaming
    from interp.models import load_model

    torch.set_num_threads(1)
    lm = load_model(model)
    ids = torch.randint(10, lm.vocab_size - 10, (1, t), generator=torch.Generator().manual_seed(0))
    ids[0, 0] = lm.bos_id or ids[0, 0]
    print(f"\nforward pass at T = {t} (one thread), self CPU seconds per op")
    print("| path | wall (s) | SDPA (s) | SDPA calls | matmul (s) | mask where (s) |\n|---|---|---|---|---|---|")
    for name in ("model's own (dense masked SDPA on local layers)", "interp routed (local layers per query block)"):
        started = time.time()
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            if name.startswith("model"):
                lm.hf_model.model(input_ids=ids, use_cache=False)
            else:
                with streaming(lm, None, lambda layer, q, k: None):
                    lm.hf_model.model(input_ids=ids, use_cache=False)
        wall = time.time() - started
        ops = {e.key: e for e in prof.key_averages()}
        seconds = {key: e.self_cpu_time_total / 1e6 for key, e in ops.items()}
        sdpa = [k for k in ops if k.startswith("aten::_scaled_dot_product")]
        print(
            f"| {name} | {wall:.1f} | {sum(seconds[k] for k in sdpa):.2f} | {sum(ops[k].count for k in sdpa)} | "
            f"{seconds.get('aten::mm', 0.0):.2f} | {seconds.get('aten::where', 0.0):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16384,32768", help="comma-separated token counts")
    parser.add_argument("--commands", default="sinks,retrieval", help="sinks, retrieval or both")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", type=Path, default=Path("out/long_context"))
    parser.add_argument("--breakdown", default="", help="comma-separated T: profile one forward pass instead")
    args = parser.parse_args()
    if args.breakdown:
        for t in map(int, args.breakdown.split(",")):
            breakdown(t, args.model)
        return
    inputs = write_inputs(args.out)
    rows = []
    for t in map(int, args.lengths.split(",")):
        for name in args.commands.split(","):
            got = timed(command(name, t, args.model, args.out / f"{name}-{t}", inputs))
            rows.append({"command": name, "T": t, **got, "eager_gib": round(eager_gib(t), 1)})
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{os.cpu_count()} CPUs, load average at end {os.getloadavg()[0]:.1f}")
    print("| command | T | wall (s) | user CPU (s) | peak RSS (GiB) | eager attention probabilities (GiB) | exit |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| interp score {r['command']} | {r['T']:,} | {r['wall_s']} | {r['user_s']} | {r['peak_rss_gib']} | {r['eager_gib']:,} | {r['exit']} |"
        )


if __name__ == "__main__":
    main()

"""Benchmark: IOI activation patching on the embedded model, ours vs transformer-lens, in one run.

Two sweeps, the ones transformer-lens ships as `get_act_patch_attn_head_out_all_pos` and
`get_act_patch_resid_pre`:

- head_out by head: each head's output z over all positions, one patch per (layer, head);
- resid_pre by position: the residual stream entering each layer, one patch per (layer, pos).

Ours is `interp.experiments.patching.activation_patching` on the HF model (many patches per forward
pass, logits at the answer position only, patches that copy values equal to the corrupted ones
skipped, the corrupted run's keys and values reused for the positions before the earliest
difference). Theirs is `transformer_lens.patching.generic_activation_patch` with the same setters
those two functions use (`layer_head_vector_patch_setter` on "z", `layer_pos_patch_setter` on
"resid_pre"), one forward per patch, on a `TransformerBridge` booted over a second copy of the same HF model and
tokenizer (`TransformerBridge.boot_transformers(name, hf_model=..., tokenizer=...)`, via
``interp.load_model(backend="tl")``; the bridge rewires the model it wraps), under
``torch.no_grad`` as TL's tutorials run it. Both get the same token tensors (no BOS: the bridge
prepends one only to string input; checked below) and the same metric, the mean logit
difference. The run fails (exit 1) if the two disagree by more than --tol.

Wall and CPU (process) time are printed side by side with their ratios; on a shared machine the
CPU ratio is the steadier one. The load average is printed at the start and the end.

    .venv/bin/python benchmarks/patching.py                     # n=4, every layer, both sweeps
    .venv/bin/python benchmarks/patching.py --record            # also rewrite the RESULTS.md block

The transformer-lens side costs one bridge forward per patch: at the defaults (every other layer
of 30, n = 4 prompts of 14 tokens) 15 x 9 + 15 x 14 = 345 of them, about 110 CPU-s; the whole run
takes about 6 minutes on 2 busy cores. --layers 0-29 runs every layer (about twice as long).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

# sweep name -> (our target, by position, TL activation name, TL setter name, TL index columns)
SWEEPS = {
    "head_out": ("head_out", False, "z", "layer_head_vector_patch_setter", ("layer", "head")),
    "resid_pre": ("resid_pre", True, "resid_pre", "layer_pos_patch_setter", ("layer", "pos")),
}


class _Clock:
    def __enter__(self):
        self._t, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._t, time.process_time() - self._c


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="IOI prompts (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="IOI generator seed")
    parser.add_argument(
        "--layers", default=None, help="layers patched, e.g. 0-29 (default: every --layer-step-th layer)"
    )
    parser.add_argument(
        "--layer-step", type=int, default=2, help="without --layers: patch layers 0, step, 2 step, ... (default 2)"
    )
    parser.add_argument(
        "--ours-serial",
        action="store_true",
        help="also time ours with one patch per forward (separates batching from the rest)",
    )
    parser.add_argument("--sweeps", default="head_out,resid_pre", help="comma list of: " + ", ".join(SWEEPS))
    parser.add_argument("--batch-rows", type=int, default=None, help="rows per forward for ours (default: auto)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (default 1: steadier on a shared machine)"
    )
    parser.add_argument("--tol", type=float, default=1e-4, help="largest allowed |ours - TL| (logit-difference units)")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this file")
    parser.add_argument(
        "--record", action="store_true", help=f"rewrite the patching block of {RESULTS.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)

    import pandas as pd
    import torch
    from transformer_lens import patching as tlp

    import interp
    from interp.analyses.patching import logit_diff, target_index
    from interp.datasets.ioi import IOIConfig, ioi
    from interp.experiments.flags import parse_layers
    from interp.experiments.patching import activation_patching

    started = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    hf = interp.load_model()
    # a second copy of the same weights: booting a bridge rewires its HF model in place (eager attention)
    bridge = interp.load_model(backend="tl").model
    batch = ioi(hf.tokenizer, IOIConfig(n=args.n, seed=args.seed), bos=hf.bos_id)
    layers = parse_layers(args.layers) if args.layers else tuple(range(0, hf.arch.n_layers, max(1, args.layer_step)))
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown:
        parser.error(f"unknown sweep(s) {unknown}: use {', '.join(SWEEPS)}")

    def metric(logits):
        return logit_diff(logits, batch.correct, batch.wrong)

    with torch.no_grad():
        # token alignment: the bridge on our token tensors computes our logits (no BOS added)
        ours_logits = hf.forward(batch.clean)[:, -1]
        theirs_logits = bridge(batch.clean)[:, -1]
        align = float((ours_logits - theirs_logits).abs().max())
        _, clean_cache = bridge.run_with_cache(batch.clean)
    header = (
        f"IOI on {hf.name}: n={batch.n} prompts x {batch.n_pos} tokens, seed {args.seed}, layers {_span(layers)} of "
        f"{hf.arch.n_layers} ({hf.arch.n_heads} heads each); torch {torch.__version__}, "
        f"{args.threads} thread(s), {os.cpu_count()} cpus ({platform.processor() or platform.machine()}); "
        f"load average {load_start[0]:.1f} at start; bridge vs HF logits on the same tokens: max diff {align:.1e}"
    )
    print(header, flush=True)
    if align > args.tol:
        print(
            f"FAIL: the bridge's logits differ from the HF model's by {align:.2e} on the same tokens", file=sys.stderr
        )
        return 1

    rows = []
    for name in sweeps:
        target, by_pos, act_name, setter_name, cols = SWEEPS[name]
        site, index, *_ = target_index(hf.arch, target, batch.n_pos, by_pos=by_pos, layers=layers)
        with _Clock() as ours_t, torch.no_grad():
            ours = activation_patching(
                hf, batch.clean, batch.corrupt, site, index, metric, batch_rows=args.batch_rows, progress=False
            ).values
        serial_t = None
        if args.ours_serial:
            with _Clock() as serial_t, torch.no_grad():
                serial = activation_patching(
                    hf, batch.clean, batch.corrupt, site, index, metric, batch_rows=batch.n, progress=False
                ).values
            assert float((serial - ours).abs().max()) <= args.tol
        columns = {"layer": index[:, 0], "head": index[:, 1], "pos": index[:, 2]}
        index_df = pd.DataFrame({c: columns[c].numpy() for c in cols})
        with _Clock() as tl_t, torch.no_grad():
            theirs = tlp.generic_activation_patch(
                bridge,
                batch.corrupt,
                clean_cache,
                lambda logits: metric(logits).mean(),
                getattr(tlp, setter_name),
                act_name,
                index_df=index_df,
            )
        diff = float((theirs.double().reshape(-1) - ours).abs().max())
        spread = float(ours.max() - ours.min())
        rows.append(
            {
                "sweep": name,
                "patches": len(index),
                "ours_wall": ours_t.wall,
                "ours_cpu": ours_t.cpu,
                "tl_wall": tl_t.wall,
                "tl_cpu": tl_t.cpu,
                "max_diff": diff,
                "ld_range": spread,
                **({"serial_wall": serial_t.wall, "serial_cpu": serial_t.cpu} if serial_t else {}),
            }
        )
        print(
            f"  {name}: {len(index)} patches, ours {ours_t.wall:.1f} s wall / {ours_t.cpu:.1f} s cpu, transformer-lens "
            f"{tl_t.wall:.1f} s / {tl_t.cpu:.1f} s, max |diff| {diff:.1e} (LD range {spread:.2f})"
            + (f"; ours one patch per forward {serial_t.wall:.1f} s / {serial_t.cpu:.1f} s" if serial_t else ""),
            flush=True,
        )
    total = {k: sum(r[k] for r in rows) for k in ("patches", "ours_wall", "ours_cpu", "tl_wall", "tl_cpu")}
    total.update(sweep="total", max_diff=max(r["max_diff"] for r in rows), ld_range=max(r["ld_range"] for r in rows))
    rows.append(total)
    load_end = os.getloadavg()
    elapsed = time.perf_counter() - started

    lines = [
        "| sweep | patches | ours wall s | ours cpu s | TL wall s | TL cpu s | TL/ours wall | TL/ours cpu | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sweep']} | {r['patches']} | {r['ours_wall']:.1f} | {r['ours_cpu']:.1f} | {r['tl_wall']:.1f} | "
            f"{r['tl_cpu']:.1f} | {r['tl_wall'] / r['ours_wall']:.1f}x | {r['tl_cpu'] / r['ours_cpu']:.1f}x | {r['max_diff']:.1e} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\nload average {load_end[0]:.1f} at end; whole run {elapsed / 60:.1f} min")
    command = "python benchmarks/patching.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": command.strip(),
                    "header": header,
                    "rows": rows,
                    "load_start": load_start,
                    "load_end": load_end,
                    "minutes": elapsed / 60,
                },
                indent=2,
            )
            + "\n"
        )
    if args.record:
        _write_section(
            f"`{command.strip()}` on **{platform.processor() or platform.machine()}, {os.cpu_count()} cores**, "
            f"{time.strftime('%Y-%m-%d')}, {elapsed / 60:.1f} min for the whole run. {header}; "
            f"{load_end[0]:.1f} at the end.\n\n{table}\n"
        )
    worst = max(r["max_diff"] for r in rows)
    if worst > args.tol:
        print(f"FAIL: ours and transformer-lens differ by {worst:.2e} > {args.tol}", file=sys.stderr)
        return 1
    return 0


def _span(layers) -> str:
    layers = list(layers)
    step = layers[1] - layers[0] if len(layers) > 1 else 1
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1, step)):
        return f"{layers[0]}-{layers[-1]}" + (f" step {step}" if step > 1 else "")
    return ",".join(map(str, layers))


def _write_section(report: str, path: Path = RESULTS, section: str = "patching") -> None:
    """Replace the ``section`` block of RESULTS.md (between its begin/end markers); other text is kept."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = f"{begin}\n## patching\n\n{report}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: head-output-by-position activation patching of IOI on the embedded model.

Ours (`interp.analyses.patching.activation_patching`: many patches per forward pass, logits at
the answer position only) against transformer-lens's serial patching
(`transformer_lens.patching.generic_activation_patch` with the by-position head-output setter, one
forward per patch) on a TransformerBridge over the same weights. Both compute the same numbers
(checked); wall times and their ratio are printed side by side. "ours, serial" is our code with one
patch per forward, which separates the gain of batching from the bridge's own overhead.

    .venv/bin/python benchmarks/patching.py --n 4 --layers 20-21

The TL side costs one bridge forward per (layer, pos, head): keep --layers small on a CPU.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="IOI prompts")
    parser.add_argument("--layers", default="20-21", help="layers patched, e.g. 20-21 or 0-29")
    parser.add_argument("--batch-rows", type=int, default=None, help="rows per forward for ours (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-serial", action="store_true", help="skip our serial run")
    args = parser.parse_args()

    import pandas as pd
    import torch
    from transformer_lens import patching as tlp

    import interp
    from interp.analyses.patching import activation_patching, logit_diff, target_index
    from interp.analyses.tasks import IOIConfig, ioi
    from interp.commands.patching import parse_layers

    if args.threads:
        torch.set_num_threads(args.threads)
    hf = interp.load_model()
    tl = interp.load_model(backend="tl")
    batch = ioi(hf.tokenizer, IOIConfig(n=args.n))
    layers = parse_layers(args.layers)
    site, index, *_ = target_index(hf, "head_out", batch.n_pos, by_pos=True, layers=layers)

    def metric(logits):
        return logit_diff(logits, batch.correct, batch.wrong)

    print(
        f"IOI head_out by position on {hf.name}: n={batch.n} prompts x {batch.n_pos} tokens, layers {list(layers)}, "
        f"{len(index)} patches; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    lm_fwd = lambda: hf.forward(batch.clean)  # noqa: E731  (warm-up)
    lm_fwd()

    t = time.perf_counter()
    ours = activation_patching(hf, batch.clean, batch.corrupt, site, index, metric, batch_rows=args.batch_rows, progress=False)
    t_ours = time.perf_counter() - t

    t_serial = None
    if not args.skip_serial:
        t = time.perf_counter()
        serial = activation_patching(hf, batch.clean, batch.corrupt, site, index, metric, batch_rows=batch.n, progress=False)
        t_serial = time.perf_counter() - t
        assert torch.allclose(serial, ours, atol=1e-4), float((serial - ours).abs().max())

    bridge = tl.model
    t = time.perf_counter()
    _, cache = bridge.run_with_cache(batch.clean)
    index_df = pd.DataFrame({"layer": index[:, 0].numpy(), "pos": index[:, 2].numpy(), "head": index[:, 1].numpy()})
    theirs = tlp.generic_activation_patch(
        bridge, batch.corrupt, cache, lambda logits: metric(logits).mean(),
        tlp.layer_pos_head_vector_patch_setter, "z", index_df=index_df,
    )
    t_tl = time.perf_counter() - t
    diff = float((theirs.double() - ours).abs().max())

    rows = [("interp, batched", t_ours), ("interp, serial (1 patch/forward)", t_serial), ("transformer-lens serial (bridge)", t_tl)]
    print(f"{'method':34s} {'wall s':>8s} {'patches/s':>10s} {'TL / this':>10s}")
    for name, sec in rows:
        if sec is None:
            continue
        print(f"{name:34s} {sec:8.2f} {len(index) / sec:10.2f} {t_tl / sec:9.2f}x")
    print(f"max |ours - transformer-lens| = {diff:.2e} (logit difference units)")


if __name__ == "__main__":
    main()

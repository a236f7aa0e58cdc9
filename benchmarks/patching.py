"""Benchmark: head-output-by-position activation patching of IOI on the embedded model.

Ours (`interp.analyses.patching.activation_patching`: many patches per forward pass, logits at
the answer position only) against transformer-lens's serial patching
(`transformer_lens.patching.generic_activation_patch` with the by-position head-output setter, one
forward per patch) on a TransformerBridge over the same weights. Both compute the same numbers
(checked); wall and CPU times and their ratios are printed side by side (CPU time, summed over
threads, is the fairer figure on a shared machine). "ours, serial" is our code with one
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

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - wall, time.process_time() - cpu

    ours, t_ours, c_ours = timed(
        lambda: activation_patching(hf, batch.clean, batch.corrupt, site, index, metric, batch_rows=args.batch_rows, progress=False)
    )
    t_serial = c_serial = None
    if not args.skip_serial:
        serial, t_serial, c_serial = timed(
            lambda: activation_patching(hf, batch.clean, batch.corrupt, site, index, metric, batch_rows=batch.n, progress=False)
        )
        assert torch.allclose(serial, ours, atol=1e-4), float((serial - ours).abs().max())

    bridge = tl.model
    index_df = pd.DataFrame({"layer": index[:, 0].numpy(), "pos": index[:, 2].numpy(), "head": index[:, 1].numpy()})

    def transformer_lens():
        with torch.no_grad():  # TL's tutorials turn grad off; it is the faster setting for TL
            _, cache = bridge.run_with_cache(batch.clean)
            return tlp.generic_activation_patch(
                bridge, batch.corrupt, cache, lambda logits: metric(logits).mean(),
                tlp.layer_pos_head_vector_patch_setter, "z", index_df=index_df,
            )

    theirs, t_tl, c_tl = timed(transformer_lens)
    diff = float((theirs.double() - ours).abs().max())

    rows = [
        ("interp, batched", t_ours, c_ours),
        ("interp, serial (1 patch/forward)", t_serial, c_serial),
        ("transformer-lens serial (bridge)", t_tl, c_tl),
    ]
    print(f"{'method':34s} {'wall s':>8s} {'cpu s':>8s} {'patches/s':>10s} {'TL/this wall':>13s} {'TL/this cpu':>12s}")
    for name, sec, cpu in rows:
        if sec is None:
            continue
        print(f"{name:34s} {sec:8.2f} {cpu:8.2f} {len(index) / sec:10.2f} {t_tl / sec:12.2f}x {c_tl / cpu:11.2f}x")
    print(f"max |ours - transformer-lens| = {diff:.2e} (logit difference units); load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

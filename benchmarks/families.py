"""Per-family correctness table: kernel statistics with each layer's own settings vs the model's
own eager attention, on the tiny random models of tests/integration/families.py.

Run: python benchmarks/families.py   (prints a markdown table; about a minute on 2 cores)

For every family in the adapter table it prints the largest error over layers, batch, heads and
rows of entropy and column mean (recv_mean), whether top-1 agrees everywhere, what the family's
tiny config switches on (window, soft-cap, sinks, MoE), the attention implementation it ran on,
and whether the transformer-lens bridge reproduces it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import families
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from interp.errors import InterpError
    from interp.hooks import capture
    from interp.kernels import attention_stats
    from interp.models import wrap_model

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    ids = torch.randint(0, families.VOCAB, (2, families.SEQ), generator=torch.Generator().manual_seed(1))
    print("| family | attention | settings exercised | max entropy error | max column-mean error | top-1 | TL bridge |")
    print("|---|---|---|---|---|---|---|")
    for family in families.FAMILIES:
        model = families.build(family)
        lm = wrap_model(model, None, name=family)
        twin = families.build(family, "eager")
        twin.load_state_dict(model.state_dict())
        with capture(lm, keep=("q", "k")) as cap:
            lm.forward(ids)
        with torch.no_grad():
            eager = twin(ids, output_attentions=True).attentions
        ent_err = col_err = 0.0
        top1 = True
        for layer in range(lm.arch.n_layers):
            st = attention_stats(cap["q", layer], cap["k", layer], **lm.attention_kwargs(layer), backend="torch")
            p = eager[layer].double()
            logp = torch.where(p > 0, p.clamp_min(1e-300).log(), torch.zeros_like(p))
            ent_err = max(ent_err, float((st.entropy.double() + (p * logp).sum(-1)).abs().max()))
            seen = torch.arange(p.shape[-1], 0, -1, dtype=torch.float64)
            col_err = max(col_err, float((st.recv_mean.double() - p.sum(-2) / seen).abs().max()))
            top1 &= bool(torch.equal(st.top1, p.argmax(-1)))
        specs = lm.arch.attention
        settings = []
        windows = sorted({s.sliding_window for s in specs if s.sliding_window})
        if windows:
            settings.append(f"window {windows[0]} on {sum(bool(s.sliding_window) for s in specs)}/{len(specs)} layers")
        if any(s.softcap for s in specs):
            settings.append(f"soft-cap {specs[0].softcap}")
        if any(s.sink_logits for s in specs):
            settings.append("sink logits")
        if len({s.scale for s in specs}) > 1:
            settings.append("per-layer scale")
        if any("expert" in n for n, _ in model.named_parameters()):
            settings.append("MoE")
        if any(n.endswith(".bias") for n, _ in model.named_parameters()):
            settings.append("biases")
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            families.tokenizer().save_pretrained(folder)
            try:
                wrap_model(
                    AutoModelForCausalLM.from_pretrained(folder).eval(),
                    AutoTokenizer.from_pretrained(folder),
                    name=family,
                    backend="tl",
                    source=folder,
                )
                bridge = "agrees"
            except InterpError as err:
                text = str(err)
                bridge = (
                    "refused: logits differ"
                    if "does not reproduce" in text
                    else "refused: q/k hooks do not fire"
                    if "does not expose" in text
                    else "refused: cannot bridge"
                )
        print(
            f"| {family} | {model.config._attn_implementation} | {', '.join(settings) or '-'} | "
            f"{ent_err:.1e} | {col_err:.1e} | {'equal' if top1 else 'DIFFERS'} | {bridge} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

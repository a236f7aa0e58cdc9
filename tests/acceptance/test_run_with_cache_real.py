"""`run_with_cache` on the two real models against TransformerLens 4.x's own `run_with_cache`.

The reference is TransformerLens's ``TransformerBridge.boot_transformers`` over a second copy of
the same weights (the bridge rewires its HF model in place), fed the same token ids (TL
prepends BOS to strings). ``cache.pattern(l, h)`` must equal TL's ``hook_pattern`` to 1e-5 on
the embedded SmolLM2 and on Gemma 3 270M, including a Gemma windowed layer on a sequence longer
than its 512-token window and a left-padded batch (rows of real tokens against TL's unpadded
run of each text); ``cache.stats`` on a left-padded batch equals the unpadded runs row by row.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

TEXTS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The committee met on Tuesday to review the budget for the new library.",
    "Rain fell.",
]
PAIRS = {"embedded": [(0, 0), (5, 1), (17, 4), (29, 8)], "gemma": [(0, 0), (3, 2), (5, 1), (11, 3), (17, 0)]}


def _bridge(lm):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    source = lm.hf_model.config._name_or_path
    copy = AutoModelForCausalLM.from_pretrained(source).eval()
    return TransformerBridge.boot_transformers(source, hf_model=copy, tokenizer=lm.tokenizer)


def _tl_patterns(bridge, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    return {name: cache[name] for name in cache.keys()}


def _long_ids(lm, n: int) -> torch.Tensor:
    from interp.datasets.texts import default_texts

    pieces = lm.tokens("\n\n".join(default_texts()))
    assert len(pieces) >= n, len(pieces)
    return torch.tensor([lm.with_bos(pieces)[:n]])


def _check_model(lm, pairs, ids_long):
    bridge = _bridge(lm)
    # one unpadded long sequence
    want = _tl_patterns(bridge, ids_long)
    layers = sorted({layer for layer, _ in pairs})
    _, cache = lm.run_with_cache(ids_long, layers=layers, sites=("q", "k"))
    worst = 0.0
    for layer, head in pairs:
        diff = (cache.pattern(layer, head) - want[f"blocks.{layer}.attn.hook_pattern"][:, head]).abs().max()
        worst = max(worst, float(diff))
    assert worst < 1e-5, worst
    assert torch.allclose(
        cache[f"blocks.{layers[-1]}.attn.hook_pattern"], want[f"blocks.{layers[-1]}.attn.hook_pattern"], atol=1e-5
    )
    # a left-padded batch: each row's real tokens against TL's run of that text alone
    ids, mask = lm.encode_batch(TEXTS)
    _, padded = lm.run_with_cache(TEXTS, layers=layers, sites=("q", "k"))
    for b in range(len(TEXTS)):
        real = mask[b].bool()
        alone = _tl_patterns(bridge, ids[b : b + 1, real])
        for layer, head in pairs:
            got = padded.pattern(layer, head)[b][real][:, real]
            ref = alone[f"blocks.{layer}.attn.hook_pattern"][0, head]
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    return worst


def _check_padded_stats(lm, layers):
    _, padded = lm.run_with_cache(TEXTS, layers=layers, sites=("q", "k"))
    ids, mask = lm.encode_batch(TEXTS)
    for b, text in enumerate(TEXTS):
        _, alone = lm.run_with_cache(text, layers=layers, sites=("q", "k"))
        n = int(mask[b].sum())
        assert torch.equal(alone.input_ids[0], ids[b, -n:])
        for layer in layers:
            got, want = padded.stats(layer), alone.stats(layer)
            for name in ("entropy", "sink", "dist", "top1p"):
                torch.testing.assert_close(getattr(got, name)[b, :, -n:], getattr(want, name)[0], atol=2e-4, rtol=1e-4)


def test_embedded_pattern_equals_transformer_lens(embedded):
    worst = _check_model(embedded, PAIRS["embedded"], _long_ids(embedded, 200))
    assert worst < 1e-5


def test_gemma3_pattern_equals_transformer_lens_past_the_window(gemma3):
    lm = gemma3
    ids = _long_ids(lm, 600)  # longer than the 512-token window of the local layers
    assert lm.attention_kwargs(3)["sliding_window"] == 512 and lm.attention_kwargs(5)["sliding_window"] is None
    _check_model(lm, PAIRS["gemma"], ids)
    # the windowed layer really cut the keys more than 511 positions back
    _, cache = lm.run_with_cache(ids, layers=[3], sites=("q", "k"))
    a = cache.pattern(3, 2)[0]
    assert float(a[599, :88].abs().sum()) == 0.0 and float(a[599, 88:].sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("which", ["embedded", "gemma3"])
def test_stats_of_a_left_padded_batch_equal_the_unpadded_runs(which, request):
    lm = request.getfixturevalue(which)
    _check_padded_stats(lm, [0, 3, lm.arch.n_layers - 1])


def test_stop_at_layer_6_returns_layers_0_to_5_and_no_logits(embedded):
    logits, cache = embedded.run_with_cache("The cat sat on the mat.", stop_at_layer=6)
    full_logits, full = embedded.run_with_cache("The cat sat on the mat.", layers=range(6))
    assert logits is None and full_logits is not None and cache.layers == list(range(6))
    for layer in range(6):
        for site in ("z", "resid_pre"):
            assert torch.equal(cache[site, layer], full[site, layer])

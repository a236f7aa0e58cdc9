"""Local layers run per query block while interp routes attention (interp/hooks/_window_blocks.py):
the same logits and the same captured statistics as the model's own dense masked SDPA."""

from __future__ import annotations

import pytest
import torch


def _tiny(family: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        max_position_embeddings=256,
        sliding_window=5,
        attn_implementation="sdpa",
    )
    if family == "gemma3_text":
        cfg = Gemma3TextConfig(**common, layer_types=["sliding_attention", "full_attention", "sliding_attention"])
        return Gemma3ForCausalLM(cfg).eval()
    return MistralForCausalLM(MistralConfig(**common)).eval()


@pytest.mark.parametrize("family", ["gemma3_text", "mistral"])
@pytest.mark.parametrize("padded", [False, True], ids=["one", "left-padded"])
def test_blocked_local_layers_equal_dense(family, padded, monkeypatch):
    import interp.hooks._window_blocks as blocks
    from interp.hooks import capture
    from interp.models import wrap_model

    lm = wrap_model(_tiny(family), None, name=family)
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (2, 41))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, :7] = 0
    with torch.no_grad():
        dense = lm.hf_model(input_ids=ids, attention_mask=mask).logits  # the model's own path, no routing
    monkeypatch.setattr(blocks, "_BLOCK", 4)  # 41 queries in 11 blocks; the window (5) spans block edges
    with capture(lm, keep=("k",)) as cap:
        with torch.no_grad():
            blocked = lm.hf_model(input_ids=ids, attention_mask=mask).logits
    assert cap["k", 0].shape[-2] == 41
    valid = mask.bool()
    torch.testing.assert_close(blocked[valid], dense[valid], rtol=0, atol=2e-6)


def test_blocks_skip_keys_out_of_reach(monkeypatch):
    """Each block's call sees only the keys the window can reach: at most W + block - 1."""
    import interp.hooks._window_blocks as blocks
    from interp.hooks import capture
    from interp.models import wrap_model

    lm = wrap_model(_tiny("mistral"), None, name="mistral")
    seen = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((query.shape[2], key.shape[2]))
        return base(module, query, key, value, attention_mask, **kwargs)

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    base = ALL_ATTENTION_FUNCTIONS["sdpa"]
    monkeypatch.setattr(blocks, "_BLOCK", 4)
    monkeypatch.setattr("interp.hooks.adapters._base_function", lambda module: spy)
    with capture(lm, keep=("k",)), torch.no_grad():
        lm.hf_model(input_ids=torch.randint(0, 97, (1, 40)))
    assert len(seen) == 3 * 10  # 3 layers x 10 blocks
    assert all(q == 4 and k <= 5 + 4 - 1 for q, k in seen)

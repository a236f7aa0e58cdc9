"""`window_attention` (a per-head StreamingLLM window) equals eager attention with the mask applied by hand.

For every family of the adapter table, on its default attention implementation and on eager: the
logits with two heads windowed (different windows and sink counts, one layer with the model's own
sliding window among them) equal those of the eager twin whose eager attention function adds, for
those heads, -inf outside ``j < first_real + sinks or i - j < window``; under left padding too,
with query blocks smaller than the sequence so that the blockwise path crosses blocks.
"""

from __future__ import annotations

import sys

import pytest
import torch
from families import FAMILIES, SEQ, VOCAB, build

from interp.errors import InterpError
from interp.hooks import _window_heads, intervene, window_attention
from interp.models import wrap_model

EDITS = ((0, 1, 3, 1), (1, 4, 2, 2))  # (layer, head, window, sinks)


def _hand_masked_eager(monkeypatch, twin, first: torch.Tensor) -> None:
    """Make the eager twin add -inf outside each edited head's sinks and window (dense, by hand)."""
    module = sys.modules[type(twin).__module__]
    base = module.eager_attention_forward

    def masked(attn, query, key, value, attention_mask, *args, **kwargs):
        layer = attn.layer_idx
        b, h, tq, _ = query.shape
        tk = key.shape[2]
        extra = torch.zeros(b, h, tq, tk, dtype=query.dtype)
        i = torch.arange(tq)[:, None] + tk - tq
        j = torch.arange(tk)[None, :]
        for edit_layer, head, window, sinks in EDITS:
            if edit_layer == layer:
                keep = (i - j < window)[None] | (j[None] < first[:, None, None] + sinks)
                extra[:, head] = extra[:, head].masked_fill(~keep, torch.finfo(query.dtype).min)
        mask = extra if attention_mask is None else attention_mask + extra
        return base(attn, query, key, value, mask, *args, **kwargs)

    monkeypatch.setattr(module, "eager_attention_forward", masked)


CASES = [(family, None) for family in FAMILIES] + [
    (family, "eager") for family in ("llama", "gemma3_text", "gpt_oss") if family in FAMILIES
]


@pytest.mark.parametrize(("family", "attn"), CASES, ids=[f"{f}-{a or 'default'}" for f, a in CASES])
def test_window_attention_matches_eager_with_the_mask_by_hand(family, attn, monkeypatch):
    monkeypatch.setattr(_window_heads, "_BLOCK", 4)  # several query blocks at SEQ tokens
    lm = wrap_model(build(family, attn), None, name=family)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, :3] = 0  # left padding: positions count from the first real token
    first = torch.tensor([0, 3])
    edits = [window_attention(layer, head, window, sinks) for layer, head, window, sinks in EDITS]
    with torch.no_grad():
        plain = lm.forward(ids, mask)
        with intervene(lm, edits):
            got = lm.forward(ids, mask)
        after = lm.forward(ids, mask)  # scoped: removed on exit
        twin = build(family, "eager")
        twin.load_state_dict(lm.hf_model.state_dict())
        _hand_masked_eager(monkeypatch, twin, first)
        want = twin(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert (got - want)[real].abs().max() < 1e-4, family
    assert (got - plain)[real].abs().max() > 1e-3, family  # the edit changes the model's output
    assert torch.equal(after, plain)


def test_window_attention_rejects_bad_settings(tiny_lm):
    with pytest.raises(InterpError, match="window >= 1"):
        window_attention(0, 0, 0, 4)
    with pytest.raises(InterpError, match="sinks >= 0"):
        window_attention(0, 0, 8, -1)
    with pytest.raises(InterpError, match="head"):
        with intervene(tiny_lm, [window_attention(0, 99, 8, 1)]):
            pass

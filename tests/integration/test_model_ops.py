"""The few model operations analyses need (`LoadedModel.logits_tail`, `greedy`, `new_cache`),
checked against plain full forward passes on tiny random models, windowed ones included."""

from __future__ import annotations

import pytest
import torch
from families import VOCAB, build

from interp.errors import InterpError
from interp.models import wrap_model


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2"])
def test_logits_tail_with_and_without_a_prefix_cache_equals_the_full_pass(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits
    assert torch.allclose(lm.logits_tail(ids, 3), full[:, -3:], atol=1e-5)
    cache = lm.new_cache()
    lm.logits_tail(ids[:, :7], 1, past=cache)
    assert torch.allclose(lm.logits_tail(ids[:, 7:], 4, past=cache), full[:, -4:], atol=1e-5)
    with pytest.raises(InterpError, match="n must lie in 1..11"):
        lm.logits_tail(ids, 12)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_greedy_equals_a_loop_of_full_passes_and_stops_at_a_stop_token(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    prompt = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(5))
    seq = prompt
    with torch.no_grad():
        for _ in range(8):  # independent route: argmax of a full pass each step
            seq = torch.cat([seq, model(seq).logits[:, -1:].argmax(-1)], dim=1)
    expected = seq[:, prompt.shape[1] :]
    assert torch.equal(lm.greedy(prompt, 8, stop=()), expected)
    stop = int(expected[0, 3])
    first = int((expected[0] == stop).nonzero()[0])
    assert torch.equal(lm.greedy(prompt, 8, stop={stop}), expected[:, : first + 1])  # the stop token is kept
    with pytest.raises(InterpError, match="one prompt at a time"):
        lm.greedy(prompt.repeat(2, 1), 4)
    with pytest.raises(InterpError, match="context of 128 tokens"):
        lm.greedy(prompt, 200)

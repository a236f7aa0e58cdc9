"""The model operations retrieval scoring added (`greedy` from a prefix cache with a stop rule,
`stop_rule`, `logits_at`, `cache_length`, `crop_cache`, `repeat_cache`), checked against plain
full forward passes on tiny random models, a windowed one included."""

from __future__ import annotations

import pytest
import torch
from families import VOCAB, build

from interp.errors import InterpError
from interp.models import wrap_model


class _Tokenizer:
    """Just what `stop_rule` reads: token 7's text holds a newline, token 3 ends the sequence."""

    eos_token_id = 3
    eos_token = "</s>"
    pad_token_id = 0

    def decode(self, ids):
        return "".join("a\nb" if i == 7 else "x" for i in ids)


def _ids(n: int, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def _loop(model, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Independent route: argmax of a full pass each step."""
    seq = prompt
    with torch.no_grad():
        for _ in range(steps):
            seq = torch.cat([seq, model(seq).logits[:, -1:].argmax(-1)], dim=1)
    return seq[:, prompt.shape[1] :]


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_greedy_from_a_prefix_cache_with_a_stop_rule(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    prompt = _ids(9, 5)
    expected = _loop(model, prompt, 8)
    cache = lm.new_cache()
    lm.logits_tail(prompt[:, :-1], 1, past=cache)  # the prompt but its last token, as Wu et al. prefill
    assert torch.equal(lm.greedy(prompt[:, -1:], 8, stop=(), past=cache), expected)
    assert lm.cache_length(cache) == 9 + 8 - 1  # the steps appended to the cache; the last token is never fed
    stop = int(expected[0, 4])
    first = int((expected[0] == stop).nonzero()[0])
    rule = lambda token: token == stop  # noqa: E731
    assert torch.equal(
        lm.greedy(prompt, 8, stop=rule), expected[:, : first + 1]
    )  # a rule, like a set: the stop token is kept


def test_greedy_length_check_counts_the_positions_fed():
    model = build("llama")  # context of 128 tokens
    lm = wrap_model(model, None, name="llama")
    prompt = _ids(120, 1)
    assert lm.greedy(prompt, 9, stop=()).shape == (1, 9)  # 120 + 9 - 1 = 128 positions fed: fits
    with pytest.raises(InterpError, match="context of 128 tokens"):
        lm.greedy(prompt, 10, stop=())


def test_stop_rule_ends_at_eos_and_optionally_at_a_newline():
    lm = wrap_model(build("llama"), _Tokenizer(), name="llama")
    assert 3 in lm.stop_ids
    line = lm.stop_rule(newline=True)
    assert line(3) and line(7) and not line(5)
    plain = lm.stop_rule()
    assert plain(3) and not plain(7)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_logits_at_chosen_positions_with_and_without_a_prefix_cache(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids(13, 2, batch=2)
    with torch.no_grad():
        full = model(ids).logits
    assert torch.allclose(lm.logits_at(ids, [1, 4, 12]), full[:, [1, 4, 12]], atol=1e-5)
    cache = lm.new_cache()
    lm.logits_at(ids[:, :7], [6], past=cache)
    assert torch.allclose(lm.logits_at(ids[:, 7:], [0, 3], past=cache), full[:, [7, 10]], atol=1e-5)
    assert lm.cache_length(cache) == 13
    with pytest.raises(InterpError, match=r"positions must be 1\+ indices in \[0, 13\)"):
        lm.logits_at(ids, [13])
    with pytest.raises(InterpError, match="positions must be"):
        lm.logits_at(ids, [])


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_crop_and_repeat_a_cache(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids(12, 3)
    other = torch.cat([ids[:, :4], _ids(8, 4)], dim=1)  # shares the first 4 tokens with ids
    with torch.no_grad():
        full, full_other = model(ids).logits, model(other).logits
    cache = lm.new_cache()
    lm.logits_tail(ids[:, :9], 1, past=cache)
    lm.crop_cache(cache, 4)  # back to the shared prefix
    assert lm.cache_length(cache) == 4
    both = lm.repeat_cache(cache, 2, 4)  # one copy per continuation
    got = lm.logits_tail(torch.cat([ids[:, 4:], other[:, 4:]]), 8, past=both)
    assert torch.allclose(got[0], full[0, 4:], atol=1e-5) and torch.allclose(got[1], full_other[0, 4:], atol=1e-5)
    assert lm.cache_length(cache) == 4  # the copies grew, the original did not
    assert torch.allclose(lm.logits_tail(other[:, 4:], 8, past=cache)[0], full_other[0, 4:], atol=1e-5)
    with pytest.raises(InterpError, match="cannot crop"):
        lm.crop_cache(cache, 13)
    with pytest.raises(InterpError, match="repeat_cache takes"):
        lm.repeat_cache(cache, 2, 13)
    assert lm.cache_length(lm.repeat_cache(cache, 3, 0)) == 0

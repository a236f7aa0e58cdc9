"""`interp.hooks.stream`: per-layer q/k to a callback, early stop, and the fired-layers check."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InterpError
from interp.hooks import capture, stream_layers, streaming


def _ids(vocab: int = 97, t: int = 11, b: int = 2, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)


def _drop_layer(lm, monkeypatch, dropped: int) -> None:
    """Make the adapter attach nothing at ``dropped`` (as if it missed that layer's module)."""
    attach = lm.adapter.attach

    class _Nothing:
        def remove(self) -> None:
            pass

    monkeypatch.setattr(
        lm.adapter,
        "attach",
        lambda lm_, site, layer, fn: _Nothing() if layer == dropped else attach(lm_, site, layer, fn),
    )


def test_stream_layers_hands_the_captured_qk_and_stops_after_the_last_layer(tiny_lm):
    lm, ids = tiny_lm, _ids()
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    got: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    # a capture of the last layer around the stream sees whether that layer ran at all
    with capture(lm, layers=[2], keep=("resid_post",)) as later:
        stream_layers(lm, ids, [1, 0], lambda layer, q, k: got.setdefault(layer, (q, k)))
    assert sorted(got) == [0, 1]
    for layer, (q, k) in got.items():
        assert q.shape == (2, lm.arch.n_heads, 11, lm.arch.d_head)
        assert k.shape == (2, lm.arch.n_kv_heads, 11, lm.arch.d_head)
        assert torch.equal(q, cap["q", layer]) and torch.equal(k, cap["k", layer])
    assert ("resid_post", 2) not in later  # the pass stopped after layer 1


def test_stream_layers_full_returns_the_logits(tiny_lm):
    lm, ids = tiny_lm, _ids()
    seen: list[int] = []
    logits = stream_layers(lm, ids, None, lambda layer, q, k: seen.append(layer), full=True)
    assert seen == list(range(lm.arch.n_layers))
    assert torch.allclose(logits, lm.forward(ids), atol=1e-6)


def test_streaming_counts_every_pass_of_a_block(tiny_lm):
    lm = tiny_lm
    with streaming(lm, [0, 2], lambda layer, q, k: None) as seen:
        for t in (5, 8, 3):
            lm.forward(_ids(t=t))
    assert seen.fired == {0: 3, 2: 3} and seen.passes == 3 and not seen.stopped


def test_a_layer_that_never_fires_is_an_error(tiny_lm, monkeypatch):
    lm = tiny_lm
    _drop_layer(lm, monkeypatch, dropped=1)
    with pytest.raises(InterpError, match=r"never fired: \[\('q', 1\)\]"):
        stream_layers(lm, _ids(), None, lambda layer, q, k: None)
    with pytest.raises(InterpError, match="none of the layers"):
        with streaming(lm, [1], lambda layer, q, k: None):
            lm.forward(_ids())


def test_the_blocks_own_error_propagates_with_a_note(tiny_lm, monkeypatch):
    lm = tiny_lm

    def boom(layer, q, k):
        if layer == 1:
            raise ValueError("bad statistic")

    with pytest.raises(ValueError, match="bad statistic") as err:
        stream_layers(lm, _ids(), None, boom)
    assert any("layers that had fired: [0]" in note for note in err.value.__notes__)
    # capture: an error in the block is never replaced by the fired check, which becomes a note
    _drop_layer(lm, monkeypatch, dropped=2)
    with pytest.raises(KeyError) as err:
        with capture(lm, keep=("q",)):
            lm.forward(_ids())
            raise KeyError("body")
    assert any("('q', 2)" in note for note in err.value.__notes__)

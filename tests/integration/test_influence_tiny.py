"""AttentionInfluence on tiny random Llamas: base loss by hand in float64; uniform heads change the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.influence import losses
from interp.errors import InterpError


def test_losses(tiny_lm):
    lm = tiny_lm
    gen = torch.Generator().manual_seed(1)
    ids_list = [torch.randint(0, 97, (1, n), generator=gen) for n in (12, 20)]
    base, masked = losses(lm, ids_list, [(1, 0), (2, 1)])
    for ids, b in zip(ids_list, base):
        logp = torch.log_softmax(lm.forward(ids)[0].double(), -1)
        want = -logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].mean()
        assert np.isclose(b, float(want), rtol=1e-6)
    assert (np.abs(masked - base) > 1e-6).all()  # the heads matter to a random model too
    again, _ = losses(lm, ids_list, [(1, 0)])
    assert np.allclose(again, base)  # edits are scoped: the base pass is unchanged afterwards


def test_head_out_of_range(tiny_lm):
    from interp.analyses.influence import attention_influence

    class _Tok:
        def __call__(self, text, return_tensors=None, add_special_tokens=False):
            class _E:
                input_ids = torch.tensor([[1, 2, 3]])

            return _E()

    lm = tiny_lm
    lm.tokenizer = _Tok()
    with pytest.raises(InterpError, match="head 1.99 out of range"):
        attention_influence(lm, ["some text"], [(1, 99)])
    with pytest.raises(InterpError, match="text 2 is empty"):
        attention_influence(lm, ["some text", "  "], [(1, 0)])
    with pytest.raises(InterpError, match="no texts"):
        attention_influence(lm, [], [(1, 0)])

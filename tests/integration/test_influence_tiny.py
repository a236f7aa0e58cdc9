"""AttentionInfluence on tiny random Llamas: base loss by hand in float64; uniform heads change the loss;
the runner resumes finished texts and checks heads against the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.influence import InfluenceConfig
from interp.errors import InterpError
from interp.experiments import Store
from interp.experiments.influence import losses, run


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


class _Tok:
    """Each word is one token: its length + 1 (ids below the tiny vocabulary of 97)."""

    bos_token_id = None

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        ids = [min(len(w), 90) + 1 for w in text.split()]

        class _E:  # as a HF tokenizer: a flat list for one text, a [1, pos] tensor with return_tensors="pt"
            input_ids = torch.tensor([ids]) if return_tensors == "pt" else ids

        return _E()


def test_run_equals_losses_and_resumes(tiny_lm, tmp_path):
    lm = tiny_lm
    lm.tokenizer = _Tok()
    texts = ("a bb ccc dddd e ff ggg", "one two three four five six seven eight nine", "x yy zzz")
    config = InfluenceConfig(heads=((2, 1), (1, 0), (0, 0)), k=2, texts=texts, max_tokens=6)
    result = run(lm, config, Store(tmp_path / "run"))
    assert result.heads == ((2, 1), (1, 0))  # the first k
    ids = [lm.encode(t)[:, :6] for t in texts]
    base, masked = losses(lm, ids, [(2, 1), (1, 0)])
    assert np.allclose(result.base_loss, base, rtol=1e-12) and np.allclose(result.masked_loss, masked, rtol=1e-12)
    assert result.n_tokens.tolist() == [6, 6, 3] and result.labels[1] == "one two three four five six seven eight nine"
    assert np.allclose(result.influence, (masked - base) / base)

    def no_forward(*args, **kwargs):
        raise AssertionError("a resumed run must not run the model again")

    lm.forward = no_forward
    again = run(lm, config, Store(tmp_path / "run"))
    assert np.array_equal(again.base_loss, result.base_loss) and np.array_equal(again.masked_loss, result.masked_loss)


def test_head_out_of_range_and_bad_texts(tiny_lm):
    lm = tiny_lm
    lm.tokenizer = _Tok()
    with pytest.raises(InterpError, match="head 1.99 out of range"):
        run(lm, InfluenceConfig(heads=((1, 99),), texts=("some text",)))
    with pytest.raises(InterpError, match="text 2 is empty"):
        InfluenceConfig(heads=((1, 0),), texts=("some text", "  "))
    with pytest.raises(InterpError, match="no texts"):
        InfluenceConfig(heads=((1, 0),), texts=())
    with pytest.raises(InterpError, match="text 1 has 1 token"):
        run(lm, InfluenceConfig(heads=((1, 0),), texts=("single",)))

"""`interp attention --weighting norm` on a tiny random GQA Llama: the right panel is the head's
a_ij ||W_O^h v_j|| normalised per row, against a dense float64 computation from the captured q, k, v
and the o_proj weight; the left panel is the plain pattern."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import build, tokenizer

from interp.errors import InterpError
from interp.experiments.attention import ViewConfig, run
from interp.hooks import capture
from interp.models import wrap_model


def test_norm_weighting_draws_the_value_weighted_pattern_beside_the_plain_one():
    lm = wrap_model(build("llama"), tokenizer(), name="tiny-llama")
    text = " ".join(f"w{i}" for i in (5, 17, 3, 44, 9, 17, 3, 60, 2, 71, 8))
    layer, head = 1, 3
    got = run(lm, ViewConfig(views=(("h", layer, head, text, "a head"),), weighting="norm"))
    left, right = got.figures[f"h_L{layer}H{head}"].data
    ids = lm.encode(text)
    with capture(lm, layers=[layer], keep=("q", "k", "v")) as cap:
        lm.forward(ids)
    kv = lm.arch.kv_map[head]
    q, k, v = cap["q", layer][0, head].double(), cap["k", layer][0, kv].double(), cap["v", layer][0, kv].double()
    t, d = q.shape
    s = (q @ k.T * lm.attention_kwargs(layer)["scale"]).masked_fill(
        ~torch.ones(t, t, dtype=torch.bool).tril(), -torch.inf
    )
    a = torch.softmax(s, -1)
    w_o = lm.adapter.attention(lm, layer).o_proj.weight.detach().double()[:, head * d : (head + 1) * d]
    u = a * (v @ w_o.T).norm(dim=-1)[None, :]
    want = (u / u.sum(-1, keepdim=True)).numpy()
    visible = np.tril(np.ones((t, t), dtype=bool))
    assert np.allclose(np.asarray(right.z, dtype=float)[visible], want[visible], atol=1e-6)
    assert np.allclose(np.asarray(left.z, dtype=float)[visible], a.numpy()[visible], atol=1e-6)
    assert np.abs(want - a.numpy())[visible].max() > 1e-2  # the weighting changes the picture


def test_an_unknown_weighting_is_one_clear_error():
    with pytest.raises(InterpError, match="unknown weighting 'values': use attention or norm"):
        ViewConfig(views=(("h", 0, 0, "w1 w2", "c"),), weighting="values")

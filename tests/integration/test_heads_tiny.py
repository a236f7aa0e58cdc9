"""Head detector scores on tiny random Llamas (MHA, GQA) equal a float64 materialised computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.heads import HeadConfig
from interp.datasets.random_tokens import repeated_random_tokens
from interp.errors import InterpError
from interp.experiments.heads import run
from interp.hooks import capture


def test_scores_match_float64(tiny_lm):
    lm = tiny_lm
    config = HeadConfig(n_seqs=3, length=12, seed=4, backend="torch")
    result = run(lm, config)
    ids = repeated_random_tokens(3, 12, 97, seed=4)  # no tokenizer: vocab from the embedding, no first token
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    t = ids.shape[1]
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in range(lm.arch.n_layers):
        q, k = cap["q", layer].double(), cap["k", layer].double()
        s = q @ k.repeat_interleave(group, 1).transpose(-1, -2) * lm.arch.scale
        a = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)  # [batch, head, T, T]
        prev = a[:, :, torch.arange(1, t), torch.arange(0, t - 1)].mean((0, 2))
        second = torch.arange(13, t)  # the second copy: token i repeats token i - 12
        ind = a[:, :, second, second - 11].mean((0, 2))
        dup = a[:, :, second, second - 12].mean((0, 2))
        got = {kind: result.grid(kind)[layer] for kind in ("previous", "duplicate", "induction")}
        assert np.allclose(got["previous"], prev.numpy(), atol=1e-5)
        assert np.allclose(got["induction"], ind.numpy(), atol=1e-5)
        assert np.allclose(got["duplicate"], dup.numpy(), atol=1e-5)
    assert result.n_rows.tolist() == [[3 * (t - 1), 3 * 12, 3 * 12]]
    df = result.to_dataframe()
    assert len(df) == 3 * lm.arch.n_layers * lm.arch.n_heads and set(df["kind"]) == {
        "previous",
        "duplicate",
        "induction",
    }


def test_layers_out_of_range(tiny_lm):
    with pytest.raises(InterpError, match="out of range"):
        run(tiny_lm, HeadConfig(n_seqs=1, length=4, layers=(99,)))

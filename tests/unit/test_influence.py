"""AttentionInfluence: heads.csv parsing, the AI formula, the loss, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyses.influence import influence, read_heads, text_loss
from interp.errors import InterpError


def test_read_heads_takes_top_by_score(tmp_path):
    f = tmp_path / "heads.csv"
    pd.DataFrame({"layer": [0, 1, 2, 3], "head": [5, 6, 7, 8], "score": [0.1, 0.9, 0.0, 0.5]}).to_csv(f, index=False)
    assert read_heads(f, 2) == ((1, 6), (3, 8))
    with pytest.raises(InterpError, match="k \\(heads to mask\\)"):
        read_heads(f, 0)
    pd.DataFrame({"layer": [0], "head": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InterpError, match="lacks columns \\['score'\\]"):
        read_heads(tmp_path / "bad.csv", 1)
    with pytest.raises(InterpError, match="not found"):
        read_heads(tmp_path / "none.csv", 1)


def test_influence_formula():
    assert np.allclose(influence(np.array([2.0, 4.0]), np.array([3.0, 4.0])), [0.5, 0.0])


def test_text_loss_is_mean_next_token_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 5, 7, generator=gen)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    want = -np.mean([torch.log_softmax(logits[0, i].double(), -1)[ids[0, i + 1]].item() for i in range(4)])
    assert math.isclose(text_loss(logits, ids), want, rel_tol=1e-9)

"""AttentionInfluence: heads.csv parsing, the AI formula, the loss, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typecheck import unchecked_new

from interp.analyses.influence import InfluenceConfig, combine, heads_to_mask, influence, text_label, text_loss
from interp.datasets.head_lists import read_heads
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


def test_read_heads_without_k_ranks_every_head(tmp_path):
    f = tmp_path / "heads.csv"
    pd.DataFrame({"layer": [0, 1, 2], "head": [5, 6, 7], "score": [0.1, 0.9, 0.1]}).to_csv(f, index=False)
    assert read_heads(f) == ((1, 6), (0, 5), (2, 7))  # ties keep the file's order


def test_heads_to_mask_k_share_and_default():
    ranked = tuple((l, h) for l in range(4) for h in range(5))  # 20 heads
    assert heads_to_mask(InfluenceConfig(heads=ranked, k=3), 30, 9) == ranked[:3]
    assert heads_to_mask(InfluenceConfig(heads=ranked, share=0.05), 30, 9) == ranked[:14]  # 5% of 270 heads
    assert heads_to_mask(InfluenceConfig(heads=ranked, share=0.01), 4, 5) == ranked[:1]  # at least one
    assert heads_to_mask(InfluenceConfig(heads=ranked[:2]), 30, 9) == ranked[:2]
    assert heads_to_mask(InfluenceConfig(), 30, 9) == ((15, 0),)


def test_config_checks_and_settings():
    cfg = InfluenceConfig(heads=((18, 6), (23, 2)), texts=("a b",), max_texts=1)
    assert cfg.heads == ((18, 6), (23, 2)) and cfg.settings()["heads"] == ["18.6", "23.2"]
    assert cfg.settings()["texts"] == "1 texts, 3 chars"
    for kwargs, match in [
        ({"heads": ()}, "no heads"),
        ({"k": 0}, "k \\(heads to mask\\)"),
        ({"share": 1.5}, "share"),
        ({"max_tokens": 1}, "max_tokens"),
    ]:
        with pytest.raises(InterpError, match=match):
            InfluenceConfig(**kwargs)
    with pytest.raises(InterpError, match="sequence of strings"):  # a user's process has no type checker
        unchecked_new(InfluenceConfig, texts="one text")


def test_combine_and_ranking():
    cfg = InfluenceConfig(heads=((1, 2),))
    recs = [
        {"n_tokens": 5, "base_loss": 2.0, "masked_loss": 2.5},
        {"n_tokens": 7, "base_loss": 4.0, "masked_loss": 6.0},
    ]
    r = combine(cfg, "m", ((1, 2),), ["first  text\nhere", "second"], recs)
    assert r.labels == ("first text here", "second") and np.allclose(r.influence, [0.25, 0.5])
    df = r.to_dataframe()
    assert df["text"].tolist() == [1, 0] and df["rank"].tolist() == [1, 2]
    s = r.summary()
    assert s["top_text"] == "second" and s["heads"] == ["1.2"] and np.isclose(s["mean_influence"], 0.375)
    assert text_label("x" * 100) == "x" * 60

"""Preplan and anchor analysis on the embedded SmolLM2-135M-Instruct: kernel statistics vs a
float64 computation from materialised attention, greedy decoding, the CLI's files, bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyses.preplan import PreplanConfig, PreplanStats, analyse
from interp.datasets.prompts import default_prompts
from interp.errors import InterpError
from interp.experiments.preplan import score_prompt as score_preplan
from interp.hooks import capture

pytestmark = pytest.mark.slow

RESPONSE = (
    "The baker makes 24 + 18 = 42 muffins in total. She sells 30 of them, "
    "so 42 - 30 = 12 muffins are left. The answer is 12."
)


def dense_stats(q, k, scale, n_prompt, window, band):
    """Test-only float64 reference from the materialised attention A [head, T, T] (docs/METRICS.md)."""
    q, k = q[0].double(), k[0].double()
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    t = q.shape[1]
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    a = torch.softmax(((q @ k.transpose(-1, -2)) * scale).masked_fill(j > i, float("-inf")), dim=-1)
    lag = (i - j).clamp(min=0).double()
    lo, hi = band
    in_band = ((i - j) >= lo) & ((i - j) <= hi)
    col = (a * in_band).sum(-2) / in_band.sum(0)
    return (
        (a * lag).sum(-1)[:, n_prompt:].numpy(),
        (a * lag.clamp(max=window)).sum(-1)[:, n_prompt:].numpy(),
        col[:, n_prompt:].numpy(),
    )


def test_embedded_matches_dense_float64(embedded):
    cfg = PreplanConfig()
    prompt = default_prompts()[0].prompt
    res = score_preplan(embedded, cfg, prompt=prompt, response=RESPONSE)
    assert res.layers == (10, 13, 15, 18, 20)  # 5 evenly spaced in [30 // 3, 60 // 3]
    assert "".join(res.tokens) == RESPONSE and not res.generated
    ids = torch.cat([embedded.encode(embedded.chat_prompt(prompt)), embedded.encode(RESPONSE)], 1)
    assert res.n_prompt + len(res.tokens) == ids.shape[1]
    with capture(embedded, layers=res.layers, keep=("q", "k")) as cap:
        embedded.forward(ids)
    parts = [
        dense_stats(cap["q", l], cap["k", l], embedded.arch.scale, res.n_prompt, 10, (10, 100)) for l in res.layers
    ]
    ref = analyse(PreplanStats(res.layers, *(np.stack([p[n] for p in parts]) for n in range(3))), cfg)
    np.testing.assert_allclose(res.span, ref.span, rtol=1e-4)
    assert (res.local == ref.local).all() and (res.global_ == ref.global_).all()
    assert res.n_local == res.n_global == 14  # 30% of 45 heads (index 13.2 of 0..44: 14 at or below)
    np.testing.assert_allclose(res.waad, ref.waad, rtol=1e-4)
    np.testing.assert_allclose(res.fai, ref.fai, rtol=1e-3, atol=1e-7)
    assert (res.preplan == ref.preplan).all() and (res.anchor == ref.anchor).all()


def test_embedded_greedy_generation(embedded):
    res = score_preplan(embedded, PreplanConfig(max_new_tokens=6))
    assert res.generated and res.prompt == default_prompts()[0].prompt
    assert 2 <= len(res.tokens) <= 6
    ids = torch.cat([embedded.encode(embedded.chat_prompt(res.prompt)), torch.tensor([res.token_ids.tolist()])], 1)
    logits = embedded.forward(ids)
    greedy = logits[0, res.n_prompt - 1 : -1].argmax(-1).tolist()
    assert greedy == res.token_ids.tolist()


def test_embedded_bad_input(embedded):
    with pytest.raises(InterpError, match="response is empty"):
        score_preplan(embedded, PreplanConfig(), prompt="What is 2 + 2?", response="   ")
    with pytest.raises(InterpError, match="exceed the context of 8192"):
        score_preplan(embedded, PreplanConfig(), prompt="What is 2 + 2?", response=" 1" * 9000)


def test_cli_writes_tables_and_page(embedded, monkeypatch, tmp_path):
    from interp import cli

    out = tmp_path / "run"
    prompt = default_prompts()[0].prompt
    monkeypatch.setattr(
        sys, "argv", ["interp", "score", "preplan", "--prompt", prompt, "--response", RESPONSE, "--out", str(out)]
    )
    cli.main()
    tokens = pd.read_csv(out / "tokens.csv", keep_default_na=False, na_values=[""])
    heads = pd.read_csv(out / "heads.csv")
    info = json.loads((out / "run.json").read_text())
    page = (out / "preplan.html").read_text()
    assert {"pos", "token", "waad", "fai", "preplan", "anchor"} <= set(tokens.columns)
    assert "".join(tokens.token) == RESPONSE
    assert {"layer", "head", "span", "group"} <= set(heads.columns) and len(heads) == 5 * 9
    sample = info["summary"]["samples"][0]
    assert len(sample["local_heads"]) == (heads.group == "local").sum()
    assert sample["n_preplan"] == tokens.preplan.sum() and sample["n_anchor"] == tokens.anchor.sum()
    assert info["settings"]["band"] == [10, 100] and info["model"] == "SmolLM2-135M-Instruct"
    assert page.count('class="tok') == len(tokens) and "plotly" in page
    assert page.count('class="tok preplan') + page.count('class="tok both') == tokens.preplan.sum()

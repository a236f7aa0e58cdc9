"""`interp attention`: the viewer experiment draws each head's exact pattern on a tiny Llama."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import cli, save_tiny_llama


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-view"))


def test_attention_command_draws_each_head(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "view"
    args = ["attention", "--heads", "0.1,1.5", "--text", "one two three", "--model", tiny_model, "--out", out]
    assert cli(monkeypatch, *args) == 0
    assert sorted(p.name for p in out.glob("*.html")) == ["head_L0H1.html", "head_L1H5.html"]
    info = json.loads((out / "run.json").read_text())
    assert [(v["layer"], v["head"]) for v in info["summary"]["views"]] == [(0, 1), (1, 5)]
    assert cli(monkeypatch, "attention", "--heads", "2.0", "--model", tiny_model, "--out", tmp_path / "bad") == 2


def test_viewer_draws_the_kernels_softmax(tiny_model):
    from interp.experiments.attention import ViewConfig, run
    from interp.hooks import capture
    from interp.kernels import attention_pattern
    from interp.models import load_model

    lm = load_model(str(tiny_model))
    text = "the cat sat on the mat and the cat sat"
    result = run(lm, ViewConfig(views=(("x", 1, 4, text, "a head"),)))
    z = np.asarray(result.figures["x_L1H4"].data[0].z, dtype=float)
    ids = lm.encode(text)
    with capture(lm, layers=[1], keep=("q", "k")) as cap:
        lm.forward(ids)
    want = attention_pattern(cap["q", 1], cap["k", 1], **lm.attention_kwargs(1), masked=True)[0, 4]
    np.testing.assert_allclose(z, want.to(torch.float32).numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)
    assert result.lines == ("a head: layer 1 head 4",)

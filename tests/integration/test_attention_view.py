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
    assert result.lines[0].startswith("a head (layer 1 head 4): attends most to ")  # the finding names the head


def _float64_pattern(tiny_model, text: str, layer: int, head: int):
    """The head's causal softmax, recomputed in float64 from the captured q and k (independent of the kernel)."""
    from interp.hooks import capture
    from interp.models import load_model

    lm = load_model(str(tiny_model))
    ids = lm.encode(text)
    with capture(lm, layers=[layer], keep=("q", "k")) as cap:
        lm.forward(ids)
    q = cap["q", layer][0, head].double()
    k = cap["k", layer][0, lm.arch.kv_map[head]].double()
    scores = q @ k.T * lm.attention_kwargs(layer)["scale"]
    n = scores.shape[0]
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, -1), lm.token_strings(ids[0])


def test_attention_text_file_is_drawn_once_and_the_finding_describes_heads(tiny_model, tmp_path, monkeypatch, capsys):
    import pandas as pd

    text = "Alice met Bob at the market, and Bob paid Alice back."
    path = tmp_path / "text.txt"
    path.write_text(text + "\n", encoding="utf-8")
    out = tmp_path / "file"
    assert (
        cli(monkeypatch, "attention", "--heads", "1.4", "--text-file", path, "--model", tiny_model, "--out", out) == 0
    )
    finding = " ".join(capsys.readouterr().err.split())
    assert "attends most to" in finding and "entropy" in finding and "sink mass" in finding
    table = pd.read_csv(out / "heads.csv")
    pattern, tokens = _float64_pattern(tiny_model, text, 1, 4)
    assert int(table["tokens"][0]) == len(tokens)  # the user's text, said once (the old default said it twice)
    entropy = float(-(pattern * pattern.clamp_min(1e-300).log()).sum(-1).mean())
    assert float(table["entropy"][0]) == pytest.approx(entropy, abs=1e-4)
    assert float(table["sink"][0]) == pytest.approx(float(pattern[:, 0].mean()), abs=1e-5)
    top = int(pattern.mean(0).argmax())
    assert table["top_keys"][0].startswith(f"{top} {tokens[top]!r}")
    twice = tmp_path / "twice"
    argv = ["attention", "--heads", "1.4", "--text-file", path, "--repeats", "2", "--model", tiny_model]
    assert cli(monkeypatch, *argv, "--out", twice) == 0
    assert int(pd.read_csv(twice / "heads.csv")["tokens"][0]) > len(tokens)


def test_attention_text_and_text_file_together_are_refused(tiny_model, tmp_path, monkeypatch, capsys):
    path = tmp_path / "t.txt"
    path.write_text("hello", encoding="utf-8")
    argv = ["attention", "--heads", "0.1", "--text", "hi", "--text-file", path, "--model", tiny_model]
    assert cli(monkeypatch, *argv, "--out", tmp_path / "o") == 2
    assert "--text and --text-file contradict each other" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

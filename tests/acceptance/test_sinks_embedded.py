"""Sink detection on the embedded SmolLM2: kernel statistics equal a float64 materialised
computation, and `interp score sinks` writes its tables, resumes and rejects bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyses.sinks import SinkConfig
from interp.experiments.sinks import run as detect_sinks
from interp.hooks import capture

pytestmark = pytest.mark.slow

TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day,\nand the birds sang in the old oak tree."


@pytest.fixture(scope="module")
def short_run(embedded):
    lm = embedded
    ids = lm.encode(TEXT)
    t = ids.shape[1]
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    qk = {layer: (cap["q", layer][0].double(), cap["k", layer][0].double()) for layer in range(lm.arch.n_layers)}
    result = detect_sinks(lm, SinkConfig(texts=(TEXT,), length=t, min_queries=1))
    return lm, t, qk, result


def _materialised(lm, q, k, t):
    """Dense float64 attention of one layer (test reference): [head, T, T]."""
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    s = q @ k.repeat_interleave(group, 0).transpose(-1, -2) * lm.arch.scale
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    return torch.softmax(s.masked_fill(~causal, float("-inf")), -1)


def test_first_token_mass_equals_float64_attention(short_run):
    lm, t, qk, result = short_run
    for layer in range(lm.arch.n_layers):
        a = _materialised(lm, *qk[layer], t)
        ftm = a[:, 1:, 0].mean(-1).numpy()
        alpha0 = a[:, :, 0].mean(-1).numpy()
        assert np.allclose(result.first_token_mass[0, layer], ftm, atol=1e-4), layer
        assert np.allclose(result.alpha0[0, layer], alpha0, atol=1e-4), layer


def test_hidden_sinks_equal_float64_definition(short_run):
    lm, t, qk, result = short_run
    sinks = result.sinks_dataframe()
    for layer in range(lm.arch.n_layers):
        a = _materialised(lm, *qk[layer], t)
        rm = a.sum(1) / torch.arange(t, 0, -1, dtype=torch.float64)
        safe = (rm - 0.1).abs() > 1e-4  # away from the threshold float32 rounding cannot flip
        for h in range(lm.arch.n_heads):
            got = set(sinks[(sinks.layer == layer) & (sinks["head"] == h)].position)
            expected = set((rm[h] > 0.1).nonzero().flatten().tolist())
            assert {j for j in got if safe[h, j]} == {j for j in expected if safe[h, j]}


def test_embedded_model_has_first_token_sinks(short_run):
    """Gu et al. 2024 find sinks at position 0 in most heads of trained LMs."""
    _, _, _, result = short_run
    rates = result.layer_sink_rates()
    assert result.sink_rate > 50.0  # regression guard (one run): 56% measured on the full text set
    assert rates[rates.layer >= 3].sink_rate_pct.median() > 70.0  # regression guard (one run): sinks from layer 3 on


def _main(monkeypatch, embedded, argv):
    """Run the CLI in-process with the session's embedded model; returns the exit code."""
    import interp.models
    from interp.cli import main

    monkeypatch.setattr(interp.models, "load_model", lambda *a, **k: embedded)
    monkeypatch.setattr(sys, "argv", ["interp", *argv])
    try:
        main()
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_cli_score_sinks_writes_tables_and_resumes(tmp_path, monkeypatch, embedded, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXT + "\n---\n" + TEXT.replace("fox", "cat") + "\n", encoding="utf-8")
    out = tmp_path / "run"
    argv = ["score", "sinks", "--texts", str(texts), "--length", "20", "--out", str(out), "--layers", "0,5,10,20"]
    assert _main(monkeypatch, embedded, argv) == 0
    heads = pd.read_csv(out / "heads.csv")
    assert {"layer", "head", "first_token_mass", "alpha0", "n_hidden_sinks"} <= set(heads.columns)
    assert len(heads) == 4 * embedded.arch.n_heads and sorted(heads.layer.unique()) == [0, 5, 10, 20]
    sinks = pd.read_csv(out / "sinks.csv", keep_default_na=False)
    assert {"layer", "head", "position", "token", "alpha"} <= set(sinks.columns)
    assert (sinks.alpha > 0.1).all() and (sinks.position <= 20 - 16).all()
    hidden_counts = sinks[sinks.hidden.astype(str) == "True"].groupby(["layer", "head"]).size()
    for (layer, head), n in hidden_counts.items():
        assert heads[(heads.layer == layer) & (heads["head"] == head)].n_hidden_sinks.item() == n
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["n_texts"] == 2 and info["settings"]["length"] == 20
    html = (out / "sinks.html").read_text()
    assert "First-token mass" in html and "hidden sinks" in html
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3  # settings + 2 texts
    # a re-run with the same settings resumes: no text is scanned again
    import interp.experiments.sinks as sinks_mod

    def boom(*a, **k):
        raise AssertionError("resumed run scanned a finished text")

    monkeypatch.setattr(sinks_mod, "scan_window", boom)
    assert _main(monkeypatch, embedded, argv) == 0
    assert pd.read_csv(out / "heads.csv").equals(heads)


def test_cli_score_sinks_bad_input(tmp_path, monkeypatch, embedded, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert _main(monkeypatch, embedded, ["score", "sinks", "--texts", str(empty), "--out", str(tmp_path / "a")]) == 2
    assert "is empty" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("Just a few words.\n", encoding="utf-8")
    assert (
        _main(
            monkeypatch,
            embedded,
            ["score", "sinks", "--texts", str(short), "--length", "64", "--out", str(tmp_path / "b")],
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "fewer than the sink window" in err and "--length" in err
    assert _main(monkeypatch, embedded, ["score", "sinks", "--eps", "1.5", "--out", str(tmp_path / "c")]) == 2
    assert "eps" in capsys.readouterr().err
    assert (
        _main(
            monkeypatch, embedded, ["score", "sinks", "--layers", "30", "--length", "8", "--out", str(tmp_path / "d")]
        )
        == 2
    )
    assert "out of range" in capsys.readouterr().err

"""Checks on tiny random models: windowed sink statistics against the model's own attention, and
the driver (`execute`) writing checks into run.json, warning, and failing under --strict."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from families import SEQ, VOCAB, build

from interp.analyses.checks import Check, ChecksFailed, above
from interp.analyses.sinks import SinkConfig
from interp.distributed import Launch
from interp.experiments import Experiment, execute
from interp.experiments.sinks import scan_window
from interp.models import wrap_model


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
def test_windowed_first_token_mass_equals_the_models_own_attention(family):
    """In each layer the first-token mass averages A_i0 over the rows 1 <= i < min(SEQ, W) that see
    position 0 (W = the layer's window; SEQ for a global layer), read off the eager model."""
    model = build(family)
    lm = wrap_model(model, None, name=family)
    twin = build(family, "eager")
    twin.load_state_dict(model.state_dict())
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        probs = [p[0].double() for p in twin(ids, output_attentions=True).attentions]  # [head, q, k]
    layers = list(range(len(probs)))
    record = scan_window(lm, ids, SinkConfig(length=SEQ, min_queries=1, backend="torch"), layers)
    windows = [lm.attention_kwargs(layer)["sliding_window"] for layer in layers]
    assert any(w is not None and w < SEQ for w in windows)  # the test covers a windowed layer
    for layer, p in enumerate(probs):
        seen = min(SEQ, windows[layer] or SEQ)
        expected = p[:, 1:seen, 0].mean(-1).numpy()
        assert np.abs(np.array(record["first_token_mass"][layer]) - expected).max() < 1e-5, (family, layer)


@dataclass(frozen=True)
class _ToyConfig:
    passed: bool = True

    def settings(self) -> dict:
        return {"passed": self.passed}


@dataclass(frozen=True)
class _ToyResult:
    passed: bool

    @property
    def checks(self) -> tuple[Check, ...]:
        return (above("clean_accuracy", 1.0 if self.passed else 0.0, 0.5, "toy"),)

    def summary(self) -> dict:
        return {"passed": self.passed}


_TOY = Experiment(
    name="toy_checks", title="Toy", command=("score", "toy-checks"), config=_ToyConfig,
    run=lambda lm, config, store: _ToyResult(config.passed), tables=lambda r: {}, figures=lambda r: {},
    describe=lambda r: "The toy circuit is L0H1.", cli=lambda: None,
)  # fmt: skip


def test_execute_records_checks_warns_and_fails_under_strict(tiny_lm, tmp_path, monkeypatch, capsys):
    import interp.distributed as distributed

    monkeypatch.setattr(distributed, "rank_model", lambda name=None, launch=None, **kw: tiny_lm)
    execute(_TOY, _ToyConfig(True), model=None, out=tmp_path / "ok")
    info = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert info["checks"] == [
        {
            "name": "clean_accuracy",
            "outcome": "passed",
            "value": 1.0,
            "threshold": 0.5,
            "passed": True,
            "detail": "toy",
            "op": ">",
        }
    ]
    assert "WARNING" not in capsys.readouterr().err

    execute(_TOY, _ToyConfig(False), model=None, out=tmp_path / "bad")  # not strict: a warning, no error
    assert "WARNING, do not trust this finding: clean_accuracy = 0" in capsys.readouterr().err.replace("\n", " ")
    with pytest.raises(ChecksFailed, match="score toy-checks"):
        execute(_TOY, _ToyConfig(False), model=None, out=tmp_path / "strict", fresh=True, launch=Launch(strict=True))
    info = json.loads((tmp_path / "strict" / "run.json").read_text())  # written before the error
    assert info["checks"][0]["passed"] is False


def test_report_marks_a_failed_check_with_a_banner_and_an_overview_column(tiny_lm, tmp_path):
    from interp.report import ReportConfig, StageReport
    from interp.report.config import _Output
    from interp.report.page import write_index

    ok = StageReport(
        "sinks", "Attention sinks", "Sinks found.", 1.0, (), (), (above("position_0_is_bos", 1.0, 0.5, "x"),)
    )
    bad = StageReport(
        "patching", "IOI circuit patching", "WARNING ... heads.", 1.0, (), (),
        (above("clean_accuracy", 0.0, 0.8, "share of clean prompts right"), above("other", 1.0, 0.5, "y")),
    )  # fmt: skip
    outputs = {s.name: _Output(summary=s.summary, summary_html=f"<p>{s.summary}</p>") for s in (ok, bad)}
    page = write_index(tmp_path, tiny_lm, ReportConfig(), [ok, bad], outputs, 1.0).read_text()
    assert "<th>checks</th>" in page
    assert '<td class="check-ok">passed (1)</td>' in page
    assert '<td class="check-failed"><b>failed</b>: clean_accuracy</td>' in page
    banner = page.index('<div class="check-failed" role="alert">')
    assert page.index('id="patching"') < banner  # the banner heads the failing section only
    assert page.count('role="alert"') == 1 and "clean_accuracy = 0 (needs &gt; 0.8)" in page[banner:]
    assert ok.trusted and not bad.trusted

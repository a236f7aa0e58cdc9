"""`interp calibrate act|zerotune` on the embedded SmolLM2 with a small task: outputs, scores that
match unbatched forward passes, resumption, and bad input."""

from __future__ import annotations

import json
import sys
from importlib import resources

import pandas as pd
import pytest
import torch

from interp.datasets.choices import available_choice_sets as available_tasks
from interp.datasets.choices import load_choices as load_task
from interp.experiments.calibration import act_edits, choice_token_ids
from interp.hooks import intervene

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_task(tmp_path_factory):
    """3 calibration + 4 held-out items of the shipped sentiment task, as a task file."""
    path = tmp_path_factory.mktemp("task") / "small.jsonl"
    lines = (resources.files("interp") / "data/tasks/sentiment.jsonl").read_text().splitlines()
    head, rows = lines[0], [json.loads(x) for x in lines[1:]]
    calib = [r for r in rows if r["split"] == "calibration"][:3]
    held = [r for r in rows if r["split"] == "heldout"][:4]
    path.write_text("\n".join([head] + [json.dumps(r) for r in calib + held]) + "\n", encoding="utf-8")
    return path


def _main(monkeypatch, embedded, argv):
    import interp.models
    from interp.cli import main

    monkeypatch.setattr(interp.models, "load_model", lambda *a, **k: embedded)
    monkeypatch.setattr(sys, "argv", ["interp", *argv])
    try:
        main()
    except SystemExit as exit_:
        return exit_.code
    return 0


def _one_by_one(lm, task, edits_for=None):
    """Correctness of each held-out item from its own unpadded forward pass."""
    cids = choice_token_ids(lm, task.choices)
    out = []
    for it in task.split("heldout"):
        ids = lm.encode(it.prompt)
        edits = edits_for(ids) if edits_for else []
        with intervene(lm, edits):
            logits = lm.forward(ids)[0, -1, cids]
        out.append(int(torch.argmax(logits)) == it.answer)
    return out


def test_shipped_tasks_have_distinct_answer_tokens(embedded):
    for name in available_tasks():
        task = load_task(name)
        ids = choice_token_ids(embedded, task.choices)
        assert len(set(ids)) == len(task.choices)
        assert all(len(embedded.tokenizer(c, add_special_tokens=False).input_ids) == 1 for c in task.choices)


def test_cli_calibrate_act(tmp_path, monkeypatch, embedded, small_task):
    out = tmp_path / "act"
    argv = ["calibrate", "act", "--task", str(small_task), "--candidates", "1", "--min-queries", "4", "--out", str(out)]
    assert _main(monkeypatch, embedded, argv) == 0
    acc = pd.read_csv(out / "accuracy.csv").set_index("condition")
    assert acc.loc["before", "n"] == 4 and acc.loc["after", "n"] == 4
    for c in ("before", "after"):
        assert acc.loc[c, "ci_low"] <= acc.loc[c, "accuracy"] <= acc.loc[c, "ci_high"]
    search = pd.read_csv(out / "search.csv")
    assert search.step.iloc[0] == "baseline" and len(search) == 2
    heads = pd.read_csv(out / "heads.csv")
    assert {"layer", "head", "method", "beta"} <= set(heads.columns)
    kept = search[search.kept.astype(str) == "True"]
    assert len(heads) == len(kept)
    items = pd.read_csv(out / "items.csv")
    task = load_task(str(small_task))
    # batched, left-padded scoring equals one unpadded forward pass per item
    assert items.correct_before.tolist() == _one_by_one(embedded, task)
    if len(heads):
        chosen = list(zip(heads.layer, heads["head"]))
        after = _one_by_one(embedded, task, lambda ids: act_edits(embedded, chosen, min_queries=4))
        assert items.correct_after.tolist() == after
    else:
        assert items.correct_after.tolist() == items.correct_before.tolist()
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["heldout_n"] == 4 and "difference_ci" in info["summary"]
    assert "held-out accuracy" in (out / "calibration.html").read_text()
    # resume: every step is in the log, nothing is recomputed
    import interp.experiments.calibration as cal

    monkeypatch.setattr(cal, "score_choices", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert _main(monkeypatch, embedded, argv) == 0
    assert pd.read_csv(out / "accuracy.csv").equals(acc.reset_index())


def _split_scores(lm, task, split, gamma=None):
    """(accuracy, mean log-prob of the correct choice) of a split from one unpadded forward pass
    per item, with ZeroTuning's log(gamma) first-token bias on every head when gamma is given:
    an independent route from the CLI's batched, left-padded scoring."""
    from interp.experiments.calibration import zerotune_edits

    cids = choice_token_ids(lm, task.choices)
    heads = [(layer, h) for layer in range(lm.arch.n_layers) for h in range(lm.arch.n_heads)]
    correct, logps = [], []
    for it in task.split(split):
        ids = lm.encode(it.prompt)
        edits = zerotune_edits(lm, heads, gamma, batch=1, key_pos=ids.shape[1]) if gamma else []
        with intervene(lm, edits):
            scores = torch.log_softmax(lm.forward(ids)[0, -1, cids].double(), -1)
        correct.append(int(scores.argmax()) == it.answer)
        logps.append(float(scores[it.answer]))
    return sum(correct) / len(correct), sum(logps) / len(logps), correct


def test_cli_calibrate_zerotune(tmp_path, monkeypatch, embedded, small_task):
    out = tmp_path / "zt"
    argv = ["calibrate", "zerotune", "--task", str(small_task), "--gammas", "0.5,2", "--out", str(out)]
    assert _main(monkeypatch, embedded, argv) == 0
    task = load_task(str(small_task))
    # The search's numbers equal the independent ones, grid point by grid point.
    expected = {g: _split_scores(embedded, task, "calibration", g) for g in (None, 0.5, 2.0)}
    search = pd.read_csv(out / "search.csv")
    assert len(search) == 3
    for row, g in zip(search.itertuples(), (None, 0.5, 2.0)):
        acc, logp, _ = expected[g]
        assert row.accuracy == pytest.approx(acc) and row.mean_logp == pytest.approx(logp, abs=1e-4), g
    # The chosen gamma is the independent argmax of (accuracy, log-prob), 1 when none beats the
    # uncalibrated model; held-out correctness after calibration follows it.
    best = max((0.5, 2.0), key=lambda g: expected[g][:2])
    want = best if expected[best][:2] > expected[None][:2] else 1.0
    info = json.loads((out / "run.json").read_text())["summary"]
    assert info["gamma"] == want
    items = pd.read_csv(out / "items.csv")
    assert items.correct_after.tolist() == _split_scores(embedded, task, "heldout", None if want == 1.0 else want)[2]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["calibrate", "act", "--heads", "30.0"], "out of range"),
        (["calibrate", "act", "--heads", "3.9"], "out of range"),
        (["calibrate", "act", "--heads", "3-1"], "LAYER.HEAD"),
        (["calibrate", "act", "--beta", "0"], "beta"),
        (["calibrate", "act", "--beta", "1.5"], "beta"),
        (["calibrate", "zerotune", "--gamma", "0"], "gamma"),
        (["calibrate", "zerotune", "--gammas", "0.5,-2"], "gamma"),
        (["calibrate", "zerotune", "--gammas", "a,b"], "--gammas"),
        (["calibrate", "act", "--task", "nope"], "unknown task"),
    ],
)
def test_cli_calibrate_bad_input(tmp_path, monkeypatch, embedded, capsys, argv, message):
    assert _main(monkeypatch, embedded, [*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err

"""Calibration: the ACT bias identity, statistics with known values, choice-set files, config checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typecheck import unchecked_new

from interp.analyses.calibration import (
    CalibrationConfig,
    act_bias,
    better,
    choice_scores,
    first_token_keys,
    hidden_sink_mass,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_interval,
)
from interp.datasets.choices import available_choice_sets as available_tasks
from interp.datasets.choices import choices_digest
from interp.datasets.choices import load_choices as load_task
from interp.errors import InterpError


def _act_materialised(a: torch.Tensor, s_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """ACT by its definition on a dense float64 attention matrix (test reference)."""
    m = (a * s_mask).sum(-1, keepdim=True)
    other = a * ~s_mask
    out = torch.where(s_mask, beta * a, other + other / (1 - m).clamp_min(1e-300) * (1 - beta) * m)
    return out


@pytest.mark.parametrize("beta", [0.4, 0.05, 0.9])
def test_act_bias_equals_the_definition(beta):
    g = torch.Generator().manual_seed(0)
    t = 12
    s = torch.randn(3, t, t, generator=g, dtype=torch.float64) * 2
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    s = s.masked_fill(~causal, float("-inf"))
    a = torch.softmax(s, -1)
    s_mask = torch.zeros(3, 1, t, dtype=torch.bool)
    s_mask[0, 0, [0, 4]] = True
    s_mask[1, 0, [2, 3, 9]] = True
    s_mask[2, 0, [5]] = True
    s_mask = s_mask.expand(3, t, t) & causal
    m = (a * s_mask).sum(-1)
    b = act_bias(m, beta)
    biased = torch.softmax(s + b[..., None] * s_mask, -1)
    expected = _act_materialised(a, s_mask, beta)
    # rows where S covers every visible key (row 0 of batch 0) are left unchanged
    full = ((a > 0) & ~s_mask).sum(-1) == 0
    expected = torch.where(full[..., None], a, expected)
    assert torch.allclose(biased, expected, atol=1e-12)
    assert torch.allclose(biased.sum(-1), torch.ones(3, t, dtype=torch.float64))
    # the mass on S is exactly beta times the original where S is visible and not everything
    partial = (m > 0) & ~full
    assert torch.allclose((biased * s_mask).sum(-1)[partial], beta * m[partial])


def test_act_bias_edge_rows():
    m = torch.tensor([0.0, 1.0, float("nan"), 0.5])
    b = act_bias(m, 0.4)
    assert b[:3].tolist() == [0.0, 0.0, 0.0]
    assert b[3].item() == pytest.approx(np.log(0.4 * 0.5 / (1 - 0.2)))
    assert torch.all(act_bias(torch.rand(10), 1.0) == 0)
    for beta in (0.0, -0.5, 1.5):
        with pytest.raises(InterpError, match="beta"):
            act_bias(m, beta)


def test_first_token_keys_under_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    keys = first_token_keys(mask)
    assert keys.tolist() == [[False, False, True, False], [True, False, False, False], [False, False, False, True]]
    assert first_token_keys(None, batch=2, key_pos=3).tolist() == [[True, False, False]] * 2


def test_wilson_interval_known_values():
    # textbook values (Newcombe 1998, Table I): 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634]
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    with pytest.raises(InterpError):
        wilson_interval(0, 0)


def test_mcnemar_exact_known_values():
    before = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    after = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    assert mcnemar_exact(before, after) == pytest.approx(2 / 2**5)  # 0 vs 5 discordant
    assert mcnemar_exact(before, before) == 1.0
    b = np.array([1, 0, 1, 0], bool)
    assert mcnemar_exact(b, ~b) == 1.0  # 2 vs 2 discordant


def test_paired_bootstrap_diff():
    x = np.array([1, 0, 1, 1, 0, 1], bool)
    assert paired_bootstrap_diff(x, x) == (0.0, 0.0)
    lo, hi = paired_bootstrap_diff(np.zeros(20, bool), np.ones(20, bool))
    assert lo == hi == 1.0
    rng = np.random.default_rng(0)
    before = rng.random(200) < 0.5
    after = before.copy()
    after[:30] = True  # at most +15 points
    lo, hi = paired_bootstrap_diff(before, after, seed=3)
    true = after.mean() - before.mean()
    assert lo <= true <= hi and lo >= 0


def test_shipped_tasks_have_both_splits_and_balanced_answers():
    names = available_tasks()
    assert {"sentiment", "mcq"} <= set(names)
    kinds = set()
    for name in names:
        task = load_task(name)
        kinds.add(task.kind)
        calib, held = task.split("calibration"), task.split("heldout")
        assert len(calib) >= 15 and len(held) >= 40
        assert len({it.id for it in task.items}) == len(task.items)
        assert len({it.prompt for it in task.items}) == len(task.items)
        counts = np.bincount([it.answer for it in held], minlength=len(task.choices))
        assert counts.min() >= len(held) // len(task.choices) - 2  # no answer dominates
        # choices start with a space, so a prompt must not end in whitespace
        assert all(it.prompt == it.prompt.rstrip() for it in task.items)
    assert {"classification", "multiple_choice"} <= kinds


def test_task_file_errors(tmp_path):
    header = {"task": "t", "template": "Q: {text}\nA:", "choices": [" yes", " no"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(header) + "\n" + json.dumps({"text": "x", "answer": "maybe"}) + "\n")
    with pytest.raises(InterpError, match="not one of"):
        load_task(str(bad))
    missing = tmp_path / "missing_field.jsonl"
    missing.write_text(json.dumps(header) + "\n" + json.dumps({"question": "x", "answer": "yes"}) + "\n")
    with pytest.raises(InterpError, match="lacks template field"):
        load_task(str(missing))
    with pytest.raises(InterpError, match="unknown task"):
        load_task("nope")
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps(header) + "\n" + json.dumps({"id": "a", "split": "heldout", "text": "x", "answer": "no"}) + "\n"
    )
    task = load_task(str(good))
    assert task.items[0].prompt == "Q: x\nA:" and task.items[0].answer == 1
    with pytest.raises(InterpError, match="no items in split 'calibration'"):
        task.split("calibration")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "magic"}, "unknown calibration method"),
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.2}, "beta"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -2.0}, "gamma"),
        ({"gammas": (0.5, -1.0)}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"tau": 1.0}, "tau"),
        ({"n_candidates": 0}, "n_candidates"),
        ({"heads": ()}, "heads is empty"),
        ({"heads": ((3,),)}, "LAYER.HEAD"),
        ({"min_queries": 0}, "min_queries"),
        ({"method": "zerotune", "gammas": ()}, "no gammas"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InterpError, match=match):
        unchecked_new(CalibrationConfig, **kwargs)  # what a user's process (no test-time type checker) sees


def _result(before, after, heads=((3, 1), (12, 4))):
    from interp.analyses.calibration import CalibrationResult

    n = len(before)
    return CalibrationResult(
        config=CalibrationConfig(method="act"),
        model="toy",
        task="toy",
        heads=tuple(heads),
        gamma=None,
        search=({"step": "baseline", "accuracy": 0.5, "mean_logp": -0.7},),
        calib_before=0.5,
        calib_after=0.6,
        item_ids=tuple(str(i) for i in range(n)),
        before=np.asarray(before, bool),
        after=np.asarray(after, bool),
        logp_before=np.full(n, -0.7),
        logp_after=np.full(n, -0.6),
    )


def test_result_tables_and_figure():
    from interp.plots.sinks import calibration_figure

    before = [1, 0, 1, 0, 0, 1, 0, 0, 1, 0]
    after = [1, 1, 1, 0, 1, 1, 0, 1, 1, 0]
    r = _result(before, after)
    acc = r.to_dataframe().set_index("condition")
    assert acc.loc["before", "correct"] == 4 and acc.loc["after", "correct"] == 7
    assert (acc.loc["after", "ci_low"], acc.loc["after", "ci_high"]) == pytest.approx(wilson_interval(7, 10))
    s = r.summary()
    assert s["difference"] == pytest.approx(0.3) and s["heads"] == ["3.1", "12.4"]
    assert s["mcnemar_p"] == pytest.approx(0.25)  # 0 vs 3 discordant: 2 / 2**3
    lo, hi = s["difference_ci"]
    assert lo <= 0.3 <= hi
    heads = r.heads_dataframe()
    assert heads[["layer", "head"]].values.tolist() == [[3, 1], [12, 4]] and (heads.beta == 0.4).all()
    fig = calibration_figure(r)
    assert list(fig.data[0].y) == pytest.approx([0.4, 0.7])
    assert "3.1, 12.4" in fig.layout.title.text


def test_config_normalises_heads_and_serialises_as_before():
    cfg = unchecked_new(CalibrationConfig, heads=[[3, "1"], (12, 4)], gammas=[0.5, 2.0])  # a user's lists
    assert cfg.heads == ((3, 1), (12, 4)) and cfg.gammas == (0.5, 2.0)
    # the settings a resume log compares: every field, tuples as lists (as earlier versions wrote)
    assert cfg.settings()["heads"] == [[3, 1], [12, 4]] and cfg.settings()["gammas"] == [0.5, 2.0]
    assert json.loads(json.dumps(cfg.settings())) == cfg.settings()


def test_choice_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    pred, logp = choice_scores(logits, torch.tensor([0, 0, 1]))
    assert pred.tolist() == [0, 1, 0]  # a tie goes to the first choice
    expected = [-math.log1p(math.exp(-2.0)), -math.log1p(math.exp(3.0)), math.log(0.5)]
    assert logp == pytest.approx(expected, abs=1e-12)


def test_hidden_sink_mass_counts_hidden_sinks_only():
    nan = float("nan")
    # batch 2, head 2, key_pos 5; tau 0.1, every key seen by enough queries (min_queries 1)
    rm = torch.tensor(
        [
            [[0.6, 0.05, 0.3, 0.02, 0.2], [0.05, 0.05, 0.05, 0.05, 0.05]],
            [[nan, 0.5, 0.05, 0.25, 0.05], [0.2, 0.01, 0.01, 0.01, 0.01]],
        ]
    )
    # head 0: row 0 sinks 0 (first), 2, 4 -> hidden 0.3 + 0.2; row 1 (key 0 padded) sinks 1 (first), 3 -> 0.25
    # head 1: row 0 none; row 1 only key 0, the first sink -> nothing hidden
    got = hidden_sink_mass(rm, tau=0.1, min_queries=1)
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx([0.75, 0.0])
    assert hidden_sink_mass(rm, tau=0.1, min_queries=1, include_first=True).tolist() == pytest.approx([1.85, 0.2])


def test_better_compares_accuracy_then_logp():
    best = {"accuracy": 0.5, "mean_logp": -0.7}
    assert better({"accuracy": 0.6, "mean_logp": -2.0}, best)
    assert better({"accuracy": 0.5, "mean_logp": -0.6}, best)
    assert not better({"accuracy": 0.5, "mean_logp": -0.7}, best)  # equal is not better: keep the smaller set
    assert not better({"accuracy": 0.4, "mean_logp": 0.0}, best)


def test_choice_file_errors_name_the_line_and_digest(tmp_path):
    header = {"task": "t", "template": "Q: {text}\nA:", "choices": [" yes", " no"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(header) + "\n\n" + json.dumps({"text": "x", "answer": "yes"}) + "\n{oops\n")
    with pytest.raises(InterpError, match="line 4 is not valid JSON"):
        load_task(str(bad))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps(header) + "\n" + json.dumps({"text": "x", "answer": "maybe"}) + "\n")
    with pytest.raises(InterpError, match="line 2"):
        load_task(str(wrong))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(header) + "\n" + json.dumps({"id": "a", "text": "x", "answer": "no"}) + "\n")
    a, b = load_task(str(good)), load_task(str(good))
    assert choices_digest(a) == choices_digest(b) != choices_digest(load_task("sentiment"))

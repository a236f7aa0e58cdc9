"""The calibrations' checks (ACT, ZeroTuning) on synthetic results: one input where each check
passes and one where it fails, with thresholds computed here independently of the code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from interp.analyses.calibration import CHECK_SETTINGS, CalibrationConfig, CalibrationResult
from interp.analyses.checks import failed
from interp.errors import InterpError


def _result(
    n=40, correct=36, *, method="act", n_choices=2, shared=0, heads=((3, 1), (12, 4)), mass=(0.5, 0.3), **config
):
    """A result on ``n`` held-out items of which ``correct`` are right before (and after) calibrating."""
    before = np.arange(n) < correct
    cfg = CalibrationConfig(method=method, **config)
    return CalibrationResult(
        config=cfg, model="toy", task="toy", heads=tuple(heads), gamma=None if method == "act" else 2.0,
        search=({"step": "baseline", "accuracy": 0.5, "mean_logp": -0.7},), calib_before=0.5, calib_after=0.6,
        item_ids=tuple(str(i) for i in range(n)), before=before, after=before.copy(),
        logp_before=np.full(n, -0.7), logp_after=np.full(n, -0.6),
        n_choices=n_choices, heldout_in_calibration=shared, head_sink_mass=tuple(mass) if method == "act" else (),
    )  # fmt: skip


def _names(result):
    return [c.name for c in failed(result.checks)]


def _binomial_quantile(n: int, p: float, q: float) -> float:
    """The ``q`` quantile of Binomial(n, p) / n, summed exactly (what guessing reaches)."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k / n
    return 1.0


def test_a_trustworthy_act_result_passes_every_check():
    r = _result()
    assert [c.name for c in r.checks] == [
        "heldout_items",
        "heldout_disjoint",
        "base_above_chance",
        "act_heads_sink_mass",
    ]
    assert not failed(r.checks)
    records = r.summary()["checks"]
    json.dumps(records, allow_nan=False)
    assert [c["passed"] for c in records] == [True] * 4


def test_heldout_items():
    assert "heldout_items" not in _names(_result(n=30, correct=28))
    (check,) = [c for c in _result(n=12, correct=11).checks if c.name == "heldout_items"]
    assert not check.passed and (check.value, check.threshold) == (12, 30)
    assert "heldout_items" not in _names(_result(n=12, correct=11, min_heldout=10))  # a threshold of the config


def test_heldout_disjoint_from_the_calibration_split():
    assert "heldout_disjoint" not in _names(_result(shared=0))
    (check,) = [c for c in _result(shared=3).checks if c.name == "heldout_disjoint"]
    assert not check.passed and check.value == 3 and check.op == "<="
    (unmeasured,) = [c for c in _result(shared=None).checks if c.name == "heldout_disjoint"]
    assert not unmeasured.passed and unmeasured.outcome == "not tested"  # not measured: not trusted, not tested


def test_base_model_above_chance():
    # sentiment-like: 2 choices, 40 items, 37 right (92.5%) is far above guessing
    good = _result(n=40, correct=37, n_choices=2)
    (check,) = [c for c in good.checks if c.name == "base_above_chance"]
    assert check.passed and check.threshold == pytest.approx(_binomial_quantile(40, 0.5, 0.95), abs=1 / 40)
    # the embedded model on mcq: 4 choices, 7 of 40 right (17.5%), below even chance (25%)
    bad = _result(n=40, correct=7, n_choices=4)
    (check,) = [c for c in bad.checks if c.name == "base_above_chance"]
    assert not check.passed and check.value == pytest.approx(0.175)
    assert check.threshold == pytest.approx(_binomial_quantile(40, 0.25, 0.95), abs=1 / 40)
    # above chance (25%) but within what guessing reaches by luck on 40 items (~37.5%)
    assert "base_above_chance" in _names(_result(n=40, correct=13, n_choices=4))
    (unknown,) = [c for c in _result(n_choices=None).checks if c.name == "base_above_chance"]
    assert not unknown.passed and unknown.outcome == "not tested"  # chance not known: not trusted, not tested


def test_act_heads_carry_hidden_sink_mass_above_tau():
    assert "act_heads_sink_mass" not in _names(_result(mass=(0.5, 0.11)))
    r = _result(mass=(0.5, 0.02))
    (check,) = failed(r.checks)
    assert check.name == "act_heads_sink_mass" and check.value == pytest.approx(0.02) and check.threshold == 0.1
    assert "12.4" in check.detail  # names the weakest head
    assert "act_heads_sink_mass" in _names(_result(mass=(0.5, 0.3), tau=0.4))  # tau is the paper's sink threshold
    assert "act_heads_sink_mass" in _names(_result(mass=()))  # not measured: not trusted
    # no head calibrated, or ZeroTuning: the check has nothing to say
    assert "act_heads_sink_mass" not in [c.name for c in _result(heads=(), mass=()).checks]
    assert "act_heads_sink_mass" not in [c.name for c in _result(method="zerotune").checks]
    assert not failed(_result(method="zerotune").checks)


def test_thresholds_are_config_defaults_left_out_of_the_resume_settings():
    settings = CalibrationConfig().settings()
    assert set(CHECK_SETTINGS) == {"min_heldout", "chance_quantile"} and set(CHECK_SETTINGS) <= set(settings)
    for bad in ({"min_heldout": 0}, {"chance_quantile": 1.0}):
        with pytest.raises(InterpError, match=next(iter(bad))):
            CalibrationConfig(**bad)

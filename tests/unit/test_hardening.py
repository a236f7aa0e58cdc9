"""Hardening (issue 30) at the unit level: notes on errors under Python 3.10, the one ``--heads``
parser, data files that are no UTF-8 text, checks with three outcomes, strict run.json.

Every test here fails on the code before the issue: each names the old behaviour it guards.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import interp
from interp.errors import InterpError, add_note


class _Py310Error(Exception):
    """An error as Python 3.10 has it: no ``add_note`` method (3.11 added it)."""

    def __getattribute__(self, name):
        if name == "add_note":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_add_note_works_where_errors_have_no_add_note():
    err = _Py310Error("the real error")
    add_note(err, "raised while streaming layers 0-1")  # err.add_note(...) raised AttributeError here
    assert err.__notes__ == ["raised while streaming layers 0-1"]
    native = ValueError("x")
    add_note(native, "a note")
    assert native.__notes__ == ["a note"]


def test_no_module_calls_err_add_note_directly():
    """hooks/stream.py and hooks/capture.py called ``err.add_note``: an AttributeError on 3.10
    that hid the real error. Only `interp.errors.add_note` may."""
    root = Path(interp.__file__).parent
    calls = [
        f"{p.relative_to(root)}:{n}"
        for p in root.rglob("*.py")
        if p.name != "errors.py"
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\w\.add_note\(", line)
    ]
    assert calls == []


# --------------------------------------------------------------------------------------------
# The one --heads parser
# --------------------------------------------------------------------------------------------


def test_parse_heads_refuses_a_head_named_twice():
    from interp.experiments.flags import parse_heads

    with pytest.raises(InterpError, match=r"--heads names head 1\.1 twice"):
        parse_heads("1.1,1.1")  # was ((1, 1), (1, 1)): calibrated twice, "2 heads" masked
    with pytest.raises(InterpError, match=r"names head 3\.0 twice"):
        parse_heads("3.0, 2.1,3.0")
    assert parse_heads("1.1,1.2,2.1") == ((1, 1), (1, 2), (2, 1))


def test_parse_heads_empty_message_fits_a_command_that_needs_heads():
    from interp.experiments.flags import parse_heads

    with pytest.raises(InterpError) as err:
        parse_heads("", optional=False)  # `interp attention --heads ""` was told to omit a required flag
    assert "omit" not in str(err.value) and "needs at least one head" in str(err.value)
    with pytest.raises(InterpError, match="or omit it"):
        parse_heads(" , ")


# --------------------------------------------------------------------------------------------
# Data files: a folder, bytes that are not UTF-8, an unreadable file
# --------------------------------------------------------------------------------------------

_READERS = [
    ("interp.datasets.texts", "read_texts", "texts file"),
    ("interp.datasets.documents", "read_samples", "samples file"),
    ("interp.datasets.questions", "read_questions", "questions file"),
]


@pytest.mark.parametrize(("module", "reader", "what"), _READERS)
def test_a_data_file_that_is_not_utf8_is_one_error(tmp_path, module, reader, what):
    import importlib

    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"query": "caf\xe9"}\n')  # samples/questions raised UnicodeDecodeError
    with pytest.raises(InterpError, match=rf"{what} .* is not UTF-8 text \(byte 14"):
        getattr(importlib.import_module(module), reader)(bad)


@pytest.mark.parametrize(("module", "reader", "what"), _READERS)
def test_a_folder_given_as_a_data_file_is_called_a_folder(tmp_path, module, reader, what):
    import importlib

    with pytest.raises(InterpError, match=rf"{what} .* is a folder: pass a UTF-8"):  # was "not found"
        getattr(importlib.import_module(module), reader)(tmp_path)


@pytest.mark.parametrize(("module", "reader", "what"), _READERS)
def test_an_unreadable_data_file_is_one_error(tmp_path, monkeypatch, module, reader, what):
    import errno
    import importlib

    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")

    def denied(self, *args, **kwargs):  # chmod 0 does not stop root, so the read itself is refused
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(InterpError, match=rf"cannot read {what} .*Permission denied"):
        getattr(importlib.import_module(module), reader)(locked)


def test_retrieval_config_refuses_a_negative_or_repeated_seed_before_any_model():
    from interp.analyses.retrieval import RetrievalConfig

    with pytest.raises(InterpError, match=r"seeds must be ints from 0 to 2\*\*32-1"):
        RetrievalConfig(seeds=(-1,))  # was accepted; numpy refused it after the model had loaded
    with pytest.raises(InterpError, match="seeds repeat a value"):
        RetrievalConfig(seeds=(1, 1))  # two identical draws: a zero spread the masking check rests on
    assert RetrievalConfig(seeds=(0, 7)).seeds == (0, 7)


# --------------------------------------------------------------------------------------------
# Checks with three outcomes: passed, failed, not tested
# --------------------------------------------------------------------------------------------


def test_a_check_has_three_outcomes_and_run_json_says_which():
    from interp.analyses.checks import Check, at_least, blocking, failed, not_tested, untested, warning

    ok = at_least("n", 5, 3, "enough")
    bad = at_least("m", 1, 3, "too few")
    open_ = not_tested(at_least("spread", 0.4, 0.0, "gap vs spread"), "one seed: no spread")
    assert [c.outcome for c in (ok, bad, open_)] == ["passed", "failed", "not tested"]
    assert not open_.passed  # never counted as a pass (it was: "above 2 x 0.000" with one seed)
    assert failed([ok, bad, open_]) == (bad,) and untested([ok, bad, open_]) == (open_,)
    assert blocking([ok, bad, open_]) == (bad, open_)  # what --strict refuses
    record = open_.as_dict()
    assert record["outcome"] == "not tested" and record["why_not_tested"] == "one seed: no spread"
    assert Check.from_dict(record) == open_ and Check.from_dict(ok.as_dict()).outcome == "passed"
    text = warning([ok, open_])
    assert text.startswith("NOT TESTED: spread not tested (one seed: no spread)") and "do not trust" not in text


def test_strict_refuses_a_check_that_was_not_tested():
    from interp.analyses.checks import ChecksFailed, at_least, not_tested
    from interp.experiments._base import enforce_checks

    class Result:
        checks = (at_least("n", 5, 3, ""), not_tested(at_least("spread", 1, 0, ""), "one seed"))

    enforce_checks("toy", Result(), False)  # without --strict: shown, not an error
    with pytest.raises(ChecksFailed, match=r"toy: 1 not tested under --strict: spread not tested \(one seed\)"):
        enforce_checks("toy", Result(), True)


def _retrieval_with_seeds(randoms):
    import numpy as np

    from interp.analyses.retrieval import MaskingResult, RetrievalConfig, RetrievalResult
    from interp.analyses.retrieval.results import SampleRecord, aggregate

    cfg = RetrievalConfig(lengths=(64,), depths=(0.5,), seeds=tuple(range(len(randoms))))
    recalls = [1.0, 1.0, 1.0]
    per = np.random.default_rng(0).random((3, 2, 3))
    scores, n = aggregate(per, [True] * 3)
    rows = tuple(SampleRecord(f"s{i}", 64, 0.5, "n", 60, 0.5, r, True, 1, "a", 0.1) for i, r in enumerate(recalls))
    masking = MaskingResult(
        1, 1, ((0, 1),), tuple(((1, s),) for s in range(len(randoms))), tuple(range(len(randoms))), 1.0, 0.2,
        tuple(randoms),
    )  # fmt: skip
    return RetrievalResult(scores, per, rows, n, masking, cfg, "m", {})


def test_retrieval_masking_check_with_one_seed_is_not_tested():
    (_, one) = _retrieval_with_seeds([0.9]).checks
    assert one.name == "masking_top_below_random" and one.outcome == "not tested"  # was "passed" (0.7 > 2 x 0.000)
    assert "1 seed" in one.untested and "--seed" in one.untested
    (_, two) = _retrieval_with_seeds([0.9, 0.95]).checks
    assert two.outcome == "passed"  # 0.725 > 2 x sd(0.9, 0.95) = 0.0707


def test_head_window_check_over_no_row_is_not_tested():
    import numpy as np

    from interp.analyses.heads import HeadConfig, HeadResult

    def result(n_rows, seen):
        return HeadResult(
            HeadConfig(), "m", (0, 1), 2, ("random",), ("previous_token", "induction"), np.zeros((1, 2, 2, 2)),
            np.array([n_rows]), (4, None), {4: np.array([seen])},
        )  # fmt: skip

    (empty,) = result([0, 0], [0, 0]).checks
    assert empty.outcome == "not tested"  # its share was set to 1.0: an empty set passed
    (half,) = result([10, 0], [5, 0]).checks
    assert half.outcome == "failed" and half.value == 0.5  # the empty detector no longer hides behind a 1.0


@pytest.mark.parametrize("kind", ["select_copy", "qr_heads"])
def test_chance_check_with_too_few_items_to_beat_guessing_is_not_tested(kind):
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "select_copy":
        from interp.analyses.select_copy import SelectCopyConfig, combine
        from interp.datasets.questions import Question

        qs = [Question(f"q{i}", "p", 4, int(rng.integers(4))) for i in range(2)]
        recs = []
        for q in qs:
            qk = rng.normal(size=(2, 3, 4))
            qk[1, 2, q.answer] = 10.0  # a head right on every question
            recs.append({"qk": qk.tolist(), "attn": qk.tolist(), "choice": 0})
        result = combine(SelectCopyConfig(questions=tuple(qs)), "m", [0, 1], 3, qs, recs)
    else:
        from interp.analyses.qr_heads import QRConfig, combine
        from interp.datasets.documents import QRSample

        samples = [QRSample("s0", "q", ("a", "b", "c"), 1)]
        mass = rng.random((2, 2, 3))
        mass[0, 1, 1] = 5.0
        recs = [{"mass": mass.tolist(), "null": np.zeros((2, 2, 3)).tolist()}]
        result = combine(QRConfig(samples=tuple(samples)), "m", [0, 1], 2, samples, recs)
    (check,) = result.checks
    assert check.outcome == "not tested" and check.value == 1.0  # was "failed": a perfect head cannot beat it


def test_influence_check_over_no_text_is_not_tested():
    import numpy as np

    from interp.analyses.influence import InfluenceConfig, InfluenceResult

    none = np.zeros(0)
    result = InfluenceResult(InfluenceConfig(heads=((0, 0),)), "m", ((0, 0),), (), none, none, none)
    (check,) = result.checks
    assert check.outcome == "not tested"  # was "failed" on a NaN mean: nothing was measured


# --------------------------------------------------------------------------------------------
# run.json fit for a paper: strict JSON, summed timings, the code's version
# --------------------------------------------------------------------------------------------


def _strict_loads(text: str):
    import json

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_run_json_is_strict_json_with_the_reason_for_each_null(tmp_path):
    import numpy as np

    from interp.runs import atomic_write_json

    path = atomic_write_json(
        tmp_path / "run.json",
        {"summary": {"rate": float("nan"), "ratio": np.float64(np.inf), "ok": 0.5}, "per_layer": [1.0, -float("inf")]},
    )
    data = _strict_loads(path.read_text())  # json.dumps wrote NaN and Infinity before: not JSON (RFC 8259)
    assert data["summary"] == {"rate": None, "ratio": None, "ok": 0.5} and data["per_layer"] == [1.0, None]
    assert data["nulls"]["summary.rate"].startswith("NaN") and data["nulls"]["per_layer[1]"].startswith("-Infinity")
    assert "summary.ok" not in data["nulls"]


def test_wall_seconds_sum_the_resumed_parts_and_fresh_starts_over(tmp_path):
    from interp.experiments import Store
    from interp.experiments._store import _sum_times
    from interp.runs import add_part_time

    folder = tmp_path / "run"
    folder.mkdir()
    add_part_time(folder, 30.0)  # two interrupted parts kept work here
    add_part_time(folder, 12.5)
    store = Store(folder, progress=False)
    info = {"wall_seconds": 7.5}
    _sum_times(store, info)
    store.close()
    assert info == {"wall_seconds": 50.0, "wall_seconds_this_part": 7.5, "parts": 3}  # was 7.5: the last part only
    fresh = Store(folder, fresh=True, progress=False)
    info = {"wall_seconds": 4.0}
    _sum_times(fresh, info)
    fresh.close()
    assert info["wall_seconds"] == 4.0 and info["parts"] == 1


def test_run_info_records_the_package_version_and_checkout_commit():
    import subprocess

    from interp.runs import run_info

    info = run_info()
    assert info["interp"] == interp.__version__
    root = Path(interp.__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info["interp_commit"].split("+")[0] == head  # this test runs from a checkout


# --------------------------------------------------------------------------------------------
# heads.csv: the spread of each per-head mean over samples
# --------------------------------------------------------------------------------------------


def test_mean_spread_matches_a_float64_computation_cell_by_cell():
    import math
    import statistics

    import numpy as np

    from interp.analyses.stats import mean_spread, proportion_spread, wilson_interval

    rng = np.random.default_rng(7)
    for n in (2, 5, 37):  # 37: past the t table (1.96)
        x = rng.normal(size=(n, 3, 4))
        got = mean_spread(x)
        t = 1.96 if n - 1 > 30 else {1: 12.706, 4: 2.776}[n - 1]
        for cell in [(0, 0), (2, 3), (1, 2)]:
            values = [float(v) for v in x[(slice(None), *cell)]]
            sd = statistics.stdev(values)
            mean = math.fsum(values) / n
            assert got["sd"][cell] == pytest.approx(sd, rel=1e-12)
            assert got["ci_low"][cell] == pytest.approx(mean - t * sd / math.sqrt(n), rel=1e-12)
            assert got["ci_high"][cell] == pytest.approx(mean + t * sd / math.sqrt(n), rel=1e-12)
    one = mean_spread(rng.normal(size=(1, 2, 2)))
    assert np.isnan(one["sd"]).all() and np.isnan(one["ci_low"]).all()  # one sample: no spread, not 0
    correct = rng.random((23, 2, 3)) < 0.7
    acc = proportion_spread(correct)
    k = int(correct[:, 1, 2].sum())
    assert (acc["ci_low"][1, 2], acc["ci_high"][1, 2]) == pytest.approx(wilson_interval(k, 23), rel=1e-12)


def test_select_copy_and_qr_heads_tables_carry_each_means_spread():
    import numpy as np

    from interp.analyses.qr_heads import QRConfig
    from interp.analyses.qr_heads import combine as qr_combine
    from interp.analyses.select_copy import SelectCopyConfig
    from interp.analyses.select_copy import combine as sc_combine
    from interp.analyses.stats import mean_spread
    from interp.datasets.documents import QRSample
    from interp.datasets.questions import Question

    rng = np.random.default_rng(3)
    qs = [Question(f"q{i}", "p", 4, int(rng.integers(4))) for i in range(9)]
    recs = [
        {"qk": rng.normal(size=(2, 3, 4)).tolist(), "attn": rng.normal(size=(2, 3, 4)).tolist(), "choice": 0}
        for _ in qs
    ]
    sc = sc_combine(SelectCopyConfig(questions=tuple(qs)), "m", [0, 1], 3, qs, recs)
    table = sc.to_dataframe()
    for name in ("qk_accuracy", "attn_accuracy", "mean_qk_margin"):
        assert {f"{name}_sd", f"{name}_ci_low", f"{name}_ci_high"} <= set(table.columns)  # were absent
    row = table[(table["layer"] == 1) & (table["head"] == 2)].iloc[0]
    assert row.mean_qk_margin_sd == pytest.approx(float(np.std(sc.qk_margin[:, 1, 2], ddof=1)), rel=1e-12)
    assert row.qk_accuracy_ci_low <= row.qk_accuracy <= row.qk_accuracy_ci_high

    samples = [QRSample(f"s{i}", "q", ("a", "b", "c"), int(rng.integers(3))) for i in range(6)]
    recs = [{"mass": rng.random((2, 2, 3)).tolist(), "null": rng.random((2, 2, 3)).tolist()} for _ in samples]
    qr = qr_combine(QRConfig(samples=tuple(samples)), "m", [0, 1], 2, samples, recs)
    table = qr.to_dataframe()
    row = table[(table["layer"] == 0) & (table["head"] == 1)].iloc[0]
    expect = mean_spread(qr.gold_score)
    assert row.qr_score_ci_high == pytest.approx(float(expect["ci_high"][0, 1]))
    assert row.qr_score_sd == pytest.approx(float(np.std(qr.gold_score[:, 0, 1], ddof=1)), rel=1e-12)


def test_retrieval_heads_table_spreads_over_counted_samples_only():
    import numpy as np

    result = _retrieval_with_seeds([0.9, 0.95])
    table = result.to_dataframe()
    per = np.asarray(result.sample_scores)[:, 1, 2]  # all three samples count in this result
    row = table[(table["layer"] == 1) & (table["head"] == 2)].iloc[0]
    assert row.score_sd == pytest.approx(float(np.std(per, ddof=1)), rel=1e-12)
    assert row.score_ci_low < row.score < row.score_ci_high


def test_calibration_checks_without_a_measured_overlap_or_items_are_not_tested():
    import numpy as np

    from interp.analyses.calibration import CalibrationConfig, CalibrationResult

    def result(n, shared):
        before = np.arange(n) < n // 2
        return CalibrationResult(
            config=CalibrationConfig(method="zerotune"), model="toy", task="toy", heads=(), gamma=2.0,
            search=(), calib_before=0.5, calib_after=0.5, item_ids=tuple(map(str, range(n))), before=before,
            after=before.copy(), logp_before=np.full(n, -0.7), logp_after=np.full(n, -0.6), n_choices=2,
            heldout_in_calibration=shared, head_sink_mass=(),
        )  # fmt: skip

    checks = {c.name: c for c in result(40, None).checks}
    assert checks["heldout_disjoint"].outcome == "not tested"  # was "failed" on a NaN nobody measured
    few = {c.name: c for c in result(3, 0).checks}  # 3 two-choice items: the 95% quantile of guessing is 1
    assert few["base_above_chance"].outcome == "not tested" and few["heldout_items"].outcome == "failed"


def test_sinks_reports_no_bos_check_for_a_model_without_bos():
    from interp.analyses.sinks import SinkConfig, combine

    toks = [([" a", " b", " c"], [False] * 3)] * 2
    rec = {"first_token_mass": [[0.9, 0.1], [0.5, 0.2]], "alpha0": [[0.92, 0.4], [0.6, 0.05]],
           "position_count": [2, 0, 0], "hits": []}  # fmt: skip
    cfg = SinkConfig(texts=("a", "b"), length=3, min_queries=2)
    result = combine("toy", cfg, [0, 1], 2, toks, [rec, rec], first_is_bos=[False, False], model_bos=False)
    # was holds("position_0_is_bos", True): a check that passed by construction
    assert [c.name for c in result.checks] == []
    with_bos = combine("toy", cfg, [0, 1], 2, toks, [rec, rec], first_is_bos=[False, True], model_bos=True)
    assert [(c.name, c.outcome) for c in with_bos.checks] == [("position_0_is_bos", "failed")]

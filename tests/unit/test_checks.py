"""Every finding says whether it can be trusted: the Check type, chance levels, and each analysis's
checks on synthetic results (one input where a check passes, one where it fails)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from interp.analyses.checks import (
    Check,
    ChecksFailed,
    above,
    as_records,
    at_least,
    at_most,
    chance_level,
    failed,
    holds,
    warning,
)  # fmt: skip
from interp.errors import InterpError

# --------------------------------------------------------------------------------------------
# the type
# --------------------------------------------------------------------------------------------


def test_constructors_compare_value_and_threshold():
    assert at_least("a", 0.8, 0.8, "").passed and not at_least("a", 0.79, 0.8, "").passed
    assert not above("b", 0.8, 0.8, "").passed and above("b", 0.81, 0.8, "").passed
    assert at_most("c", 0.8, 0.8, "").passed and not at_most("c", 0.81, 0.8, "").passed
    assert holds("d", True, "").value == 1.0 and not holds("d", False, "").passed
    for make in (at_least, above, at_most):  # a number that could not be measured never passes
        assert not make("nan", float("nan"), 0.0, "").passed


def test_records_round_trip_and_warning_names_the_failed_check():
    checks = (at_least("clean_accuracy", 0.0, 0.8, "x"), above("gap", float("nan"), 1.0, "y"), holds("ok", True, "z"))
    records = as_records(checks)
    json.dumps(records, allow_nan=False)  # NaN is written as null: strict JSON
    assert records[1]["value"] is None and records[0]["passed"] is False
    back = tuple(Check.from_dict(r) for r in records)
    assert back[0] == checks[0] and math.isnan(back[1].value) and back[2] == checks[2]
    assert [c.name for c in failed(checks)] == ["clean_accuracy", "gap"]
    text = warning(checks)
    assert text.startswith("WARNING") and "clean_accuracy = 0 (needs >= 0.8)" in text and "ok" not in text
    assert warning(checks[2:]) == ""
    err = ChecksFailed("patch ioi", failed(checks))
    assert isinstance(err, InterpError) and "2 check(s) failed" in str(err)


def test_chance_level_matches_the_binomial():
    # one guessing head on 20 four-option items: P(Binomial(20, 1/4) <= 8) = 0.959, so the 95th percentile is 8/20
    assert chance_level([0.25] * 20, 1, 0.95, n_sim=20000) == pytest.approx(0.40, abs=0.025)
    # the best of many guessing heads is luckier than one
    assert chance_level([0.25] * 20, 200) > chance_level([0.25] * 20, 1)
    # certain items are always right
    assert chance_level([1.0] * 5, 3) == 1.0
    assert math.isnan(chance_level([], 3))


# --------------------------------------------------------------------------------------------
# each analysis: one input where its check passes, one where it fails
# --------------------------------------------------------------------------------------------


def test_patching_needs_a_model_that_does_the_task():
    from interp.analyses.patching import Baseline, PatchResult
    from interp.analyses.patching.results import baseline_checks

    does = Baseline(
        n=8, clean_accuracy=1.0, clean_top1=0.9, corrupt_accuracy=0.1, clean_logit_diff=3.2, corrupt_logit_diff=-0.4
    )
    # the Gemma run: the right name on 0% of clean prompts, LD -6.05 (corrupted -0.31)
    does_not = Baseline(
        n=8, clean_accuracy=0.0, clean_top1=0.0, corrupt_accuracy=0.5, clean_logit_diff=-6.05, corrupt_logit_diff=-0.31
    )
    assert not failed(baseline_checks(does))
    bad = failed(baseline_checks(does_not))
    assert [c.name for c in bad] == ["clean_accuracy", "clean_minus_corrupt_logit_diff"]
    assert bad[1].value == pytest.approx(-6.05 + 0.31)
    # pairs whose corrupted answer is the right one: the clean run prefers it less than the corrupted run
    swapped = Baseline(
        n=4, clean_accuracy=1.0, clean_top1=1.0, corrupt_accuracy=1.0, clean_logit_diff=0.5, corrupt_logit_diff=2.0
    )
    assert [c.name for c in failed(baseline_checks(swapped))] == ["clean_minus_corrupt_logit_diff"]
    # the checks travel through run.json's layout (what `interp patch overlap` reads back) and the summary
    r = PatchResult("ioi", "head_out", "activation", "score", ("layer", "head"), np.zeros((2, 2)), does_not,
                    checks=baseline_checks(does_not))  # fmt: skip
    assert PatchResult.from_dataframe(r.to_dataframe(), r.meta()).checks == r.checks
    assert [c["passed"] for c in r.summary()["checks"]] == [False, False]


def _select_copy(correct_head: bool, n_q: int = 24):
    from interp.analyses.select_copy import SelectCopyConfig, combine
    from interp.datasets.questions import Question

    rng = np.random.default_rng(0)
    qs = [Question(f"q{i}", "p", 4, int(rng.integers(4))) for i in range(n_q)]
    records = []
    for q in qs:
        qk = rng.normal(size=(2, 3, 4))  # [layer, head, option]: guessing heads
        if correct_head:
            qk[1, 2, q.answer] = 10.0  # one head always picks the answer
        records.append({"qk": qk.tolist(), "attn": qk.tolist(), "choice": 0})
    return combine(SelectCopyConfig(questions=tuple(qs)), "m", [0, 1], 3, qs, records)


def test_select_copy_best_head_against_chance():
    good, chance = _select_copy(True), _select_copy(False)
    assert not failed(good.checks) and good.checks[0].value == 1.0
    (check,) = chance.checks
    assert check.name == "best_head_above_chance" and not check.passed
    assert 0.25 < check.threshold < 1.0  # the best of 6 guessing heads beats 1/4 by luck
    assert good.summary()["checks"][0]["passed"] is True


def _qr(correct_head: bool, n_s: int = 20):
    from interp.analyses.qr_heads import QRConfig, combine
    from interp.datasets.documents import QRSample

    rng = np.random.default_rng(1)
    samples = [QRSample(f"s{i}", "q", ("a", "b", "c"), int(rng.integers(3))) for i in range(n_s)]
    records = []
    for s in samples:
        mass = rng.random((2, 2, 3))  # [layer, head, doc]
        if correct_head:
            mass[0, 1, s.gold] = 5.0
        records.append({"mass": mass.tolist(), "null": np.zeros((2, 2, 3)).tolist()})
    return combine(QRConfig(samples=tuple(samples)), "m", [0, 1], 2, samples, records)


def test_qr_heads_best_head_against_chance():
    good, chance = _qr(True), _qr(False)
    assert good.n_docs == (3,) * 20 and not failed(good.checks)
    assert failed(chance.checks)[0].name == "best_head_above_chance"


def test_influence_masking_must_raise_the_loss_and_heads_must_be_checked():
    from interp.analyses.influence import InfluenceConfig, combine

    texts = ("one text here", "another text")
    up = [{"n_tokens": 3, "base_loss": 2.0, "masked_loss": 2.5}, {"n_tokens": 2, "base_loss": 3.0, "masked_loss": 3.1}]
    down = [
        {"n_tokens": 3, "base_loss": 2.0, "masked_loss": 1.9},
        {"n_tokens": 2, "base_loss": 3.0, "masked_loss": 2.9},
    ]
    cfg = InfluenceConfig(heads=((0, 1),), texts=texts)
    assert not failed(combine(cfg, "m", ((0, 1),), texts, up).checks)
    assert [c.name for c in failed(combine(cfg, "m", ((0, 1),), texts, down).checks)] == ["masking_raises_loss"]
    unchecked = InfluenceConfig(heads=((0, 1),), texts=texts, heads_checked=False)
    assert [c.name for c in failed(combine(unchecked, "m", ((0, 1),), texts, up).checks)] == ["heads_from_checked_run"]


def test_heads_checks_passed_reads_the_run_beside_heads_csv(tmp_path):
    from interp.datasets.head_lists import heads_checks_passed

    heads = tmp_path / "heads.csv"
    heads.write_text("layer,head,score\n0,1,0.5\n")
    assert heads_checks_passed(heads) is None  # no run.json: not known
    (tmp_path / "run.json").write_text(json.dumps({"checks": as_records([holds("a", True, "")])}))
    assert heads_checks_passed(heads) is True
    (tmp_path / "run.json").write_text(
        json.dumps({"checks": as_records([holds("a", True, ""), holds("b", False, "")])})
    )
    assert heads_checks_passed(heads) is False


# --------------------------------------------------------------------------------------------
# the driver: warning, --strict, exit code 3
# --------------------------------------------------------------------------------------------


class _Result:
    def __init__(self, passed: bool) -> None:
        self.checks = (holds("model_does_task", passed, "synthetic"),)


def test_strict_makes_a_failed_check_an_error_and_main_exits_3(monkeypatch, capsys):
    import interp.cli as cli
    from interp.experiments._base import enforce_checks

    enforce_checks("toy", _Result(False), strict=False)  # not strict: a warning only
    enforce_checks("toy", _Result(True), strict=True)
    with pytest.raises(ChecksFailed, match="model_does_task = 0"):
        enforce_checks("toy", _Result(False), strict=True)

    def app(**kwargs):
        enforce_checks("score toy on m", _Result(False), strict=True)

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 3 and "error: score toy on m: 1 check(s) failed" in capsys.readouterr().err


def test_finding_starts_with_the_warning():
    from interp.experiments._base import finding

    class Exp:
        @staticmethod
        def describe(result):
            return "Heads L1H2 and L3H4 form the circuit."

    assert finding(Exp, _Result(True)) == "Heads L1H2 and L3H4 form the circuit."
    assert finding(Exp, _Result(False)).startswith("WARNING, do not trust this finding: model_does_task = 0")


# --------------------------------------------------------------------------------------------
# sinks: windowed layers and BOS (issue 20)
# --------------------------------------------------------------------------------------------


def test_windowed_first_token_mass_is_judged_over_the_queries_that_see_position_0():
    """In a layer with window W, first-token mass averages the rows 1 <= i < W of a dense float64
    softmax, and alpha_0 (the kernel's window-aware recv_mean) = (1 + (W - 1) * mass) / W; the
    global definition (all rows) would count the rows past W, which cannot see position 0, as 0."""
    import torch

    from interp.analyses.sinks import first_token_mass, sink_members
    from interp.kernels import attention_stats

    g = torch.Generator().manual_seed(5)
    t, w, d = 29, 8, 8  # length not a multiple of the window
    q = torch.randn(1, 4, t, d, generator=g, dtype=torch.float64)
    k = torch.randn(1, 2, t, d, generator=g, dtype=torch.float64)
    k[:, :, 0] *= 3.0
    st = attention_stats(q, k, scale=d**-0.5, sliding_window=w, columns=True, backend="reference")
    s = (q @ k.repeat_interleave(2, 1).transpose(-1, -2))[0] * d**-0.5
    i, j = torch.arange(t)[:, None], torch.arange(t)[None]
    a = torch.softmax(s.masked_fill((j > i) | (i - j >= w), float("-inf")), -1)
    ftm = first_token_mass(st.sink[0], 1, window=w)
    assert torch.allclose(ftm, a[:, 1:w, 0].mean(-1), atol=1e-9)
    assert torch.allclose(st.recv_mean[0, :, 0].double(), (1 + (w - 1) * ftm) / w, atol=1e-9)
    assert (first_token_mass(st.sink[0], 1) < ftm).all()  # the global definition dilutes it
    # a window narrower than min_queries: keys seen by a full window are still candidates
    rm = torch.full((1, t), 0.05, dtype=torch.float64)
    rm[0, [0, 10]] = 0.5
    member, hidden = sink_members(rm, 0.1, min_queries=16, window=w)
    assert member[0].nonzero().flatten().tolist() == [0, 10] and hidden[0].nonzero().flatten().tolist() == [10]
    assert sink_members(rm, 0.1, min_queries=16)[0][0].nonzero().flatten().tolist() == [0, 10]  # t - 16 = 13 >= 10


def _sink_result(*, first_is_bos, model_bos, windows=(None, None), length=5):
    from interp.analyses.sinks import SinkConfig, combine

    toks = [(["<bos>", " a", " b", " c", " d"][:length], [True] + [False] * (length - 1))] * 2
    rec = {"first_token_mass": [[0.9, 0.1], [0.5, 0.2]], "alpha0": [[0.92, 0.4], [0.6, 0.05]],
           "position_count": [2] + [0] * (length - 1), "hits": []}  # fmt: skip
    cfg = SinkConfig(texts=("a", "b"), length=length, min_queries=2)
    return combine(
        "toy", cfg, [0, 1], 2, toks, [rec, rec], layer_windows=windows, first_is_bos=first_is_bos, model_bos=model_bos
    )


def test_sinks_check_that_position_0_is_bos():
    ok = _sink_result(first_is_bos=[True, True], model_bos=True)
    assert [(c.name, c.passed) for c in ok.checks] == [("position_0_is_bos", True)]
    # the Gemma run: the model prepends BOS but the windows start with an ordinary token
    bad = _sink_result(first_is_bos=[False, True], model_bos=True)
    (check,) = failed(bad.checks)
    assert check.name == "position_0_is_bos" and check.value == 0.5
    assert bad.summary()["position_0_is_bos"] == 0.5
    # a model without BOS sees its text from the first token on: nothing to fail
    assert not failed(_sink_result(first_is_bos=[False, False], model_bos=False).checks)


def test_sinks_report_windowed_layers_apart():
    r = _sink_result(first_is_bos=[True, True], model_bos=True, windows=(None, 3))
    assert r.layer_kinds() == ("global", "windowed W=3")
    rates = r.layer_sink_rates()
    assert rates["kind"].tolist() == ["global", "windowed W=3"] and rates["window"].tolist()[1] == 3
    assert r.kind_sink_rates() == {"global": 100.0, "windowed W=3": 50.0}  # alpha_0 > 0.3: 0.92, 0.4 | 0.6
    assert r.summary()["sink_rate_pct_by_kind"] == {"global": 100.0, "windowed W=3": 50.0}
    # W = 3 leaves 2 rows past the sink that see position 0: min_queries = 2 passes, 3 would not
    rows = {c.name: c for c in r.checks}["rows_seeing_position_0"]
    assert rows.value == 2 and rows.passed
    from dataclasses import replace

    narrow = replace(r, config=replace(r.config, min_queries=3))
    assert [c.name for c in failed(narrow.checks)] == ["rows_seeing_position_0"]
    # a window as long as the text acts as global attention
    assert _sink_result(first_is_bos=[True, True], model_bos=True, windows=(None, 5)).layer_kinds() == (
        "global",
        "global",
    )


# --------------------------------------------------------------------------------------------
# head detectors: expected keys within a layer's window
# --------------------------------------------------------------------------------------------


def test_head_detectors_check_that_windowed_layers_see_the_expected_keys():
    import torch

    from interp.analyses.heads import HeadConfig, combine, detector_targets, rows_in_window

    n = 6  # random tokens said twice: [BOS] r r, duplicate keys n back, induction keys n - 1 back
    r = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:n] + 10
    ids = torch.cat([torch.tensor([1]), r, r])[None]
    kinds = ("previous", "duplicate", "induction")
    targets, widths, rows = detector_targets(ids, kinds)
    assert rows == (2 * n, n, n)
    assert rows_in_window(targets, widths, n + 1) == rows  # every key in sight
    assert rows_in_window(targets, widths, n) == (2 * n, 0, n)  # duplicates out of sight, induction keys just in
    assert rows_in_window(targets, widths, 2) == (2 * n, 0, 0)

    sums = [[[0.0, 0.0]] * 3] * 2  # [layer][kind][head]

    def record(w):
        return {"sums": sums, "rows": list(rows), "in_window": {str(w): list(rows_in_window(targets, widths, w))}}

    cfg = HeadConfig(kinds=kinds, n_seqs=1, length=n)
    wide = combine(cfg, "m", [0, 1], 2, {"random": [record(64)]}, windows=[None, 64])
    assert [(c.name, c.passed) for c in wide.checks] == [("expected_keys_in_window_64", True)]
    narrow = combine(cfg, "m", [0, 1], 2, {"random": [record(n)]}, windows=[None, n])
    (check,) = failed(narrow.checks)
    assert check.value == 0.0 and "random/duplicate" in check.detail
    assert combine(cfg, "m", [0, 1], 2, {"random": [record(n)]}).checks == ()  # all global: nothing to check


def test_influence_in_the_report_knows_whether_its_heads_passed_their_checks():
    from interp.experiments.influence import report_config

    class Retrieval:
        def __init__(self, passed):
            self.checks = () if passed is None else (holds("counted_samples", passed, ""),)

        def top(self, k):
            return [(3, 1, 0.4), (5, 0, 0.2)]

    assert report_config(True, {"retrieval": Retrieval(True)}).heads_checked is True
    assert report_config(True, {"retrieval": Retrieval(False)}).heads_checked is False
    assert report_config(True, {"retrieval": Retrieval(None)}).heads_checked is None  # declares no checks
    assert report_config(True, {}).heads_checked is None  # no source run at all


# --------------------------------------------------------------------------------------------
# retrieval: counted samples and the masking check
# --------------------------------------------------------------------------------------------


def _retrieval(recalls, masking=None):
    from interp.analyses.retrieval import RetrievalConfig, RetrievalResult
    from interp.analyses.retrieval.results import SampleRecord, aggregate

    cfg = RetrievalConfig(lengths=(64,), depths=(0.5,))
    per = np.random.default_rng(0).random((len(recalls), 2, 3))
    counted = [r >= cfg.min_recall for r in recalls]
    scores, n = aggregate(per, counted)
    rows = tuple(
        SampleRecord(f"s{i}", 64, 0.5, "n", 60, 0.5, r, c, 1, "a", 0.1)
        for i, (r, c) in enumerate(zip(recalls, counted))
    )
    return RetrievalResult(scores, per, rows, n, masking, cfg, "m", {})


def _masking(top, randoms):
    from interp.analyses.retrieval import MaskingResult

    return MaskingResult(1, 1, ((0, 1),), tuple(((1, s),) for s in range(len(randoms))), tuple(range(len(randoms))),
                         1.0, top, tuple(randoms))  # fmt: skip


def test_retrieval_needs_recalled_needles():
    ok = _retrieval([1.0, 0.8, 0.6, 0.2])
    assert [(c.name, c.passed, c.value) for c in ok.checks] == [("counted_samples", True, 3.0)]
    # a needle the model cannot recall: nothing counts, so no head can be scored
    bad = _retrieval([0.0, 0.1, 0.2])
    (check,) = failed(bad.checks)
    assert (
        check.name == "counted_samples"
        and check.value == 0
        and "mean recall of the unmasked model 0.10" in check.detail
    )
    assert bad.summary()["checks"][0]["passed"] is False


def test_retrieval_masking_must_separate_top_from_random_beyond_the_seed_spread():
    sep = _retrieval([1.0] * 3, _masking(0.2, [0.9, 0.95, 1.0]))
    assert not failed(sep.checks)
    # top-K masked barely below the random draws, whose own spread is larger: not separated
    close = _retrieval([1.0] * 3, _masking(0.85, [0.7, 0.9, 1.0]))
    (check,) = failed(close.checks)
    assert check.name == "masking_top_below_random" and check.threshold == pytest.approx(
        2 * np.std([0.7, 0.9, 1.0], ddof=1)
    )
    # masking the top heads raises recall: fails whatever the spread
    assert failed(_retrieval([1.0] * 3, _masking(1.0, [0.9, 0.9])).checks)[0].name == "masking_top_below_random"


# --------------------------------------------------------------------------------------------
# preplan / anchor: windows of the chosen layers
# --------------------------------------------------------------------------------------------


def _preplan_run(windows, n_prompt=20, n_resp=30):
    from interp.analyses.preplan import PreplanConfig, PreplanResult, PreplanRun, PreplanStats, analyse

    rng = np.random.default_rng(0)
    cfg = PreplanConfig(layers=(0, 1))
    stats = PreplanStats(layers=(0, 1), dist=rng.uniform(0, 40, (2, 6, n_resp)), waad=rng.uniform(0, 10, (2, 6, n_resp)),
                         band=rng.uniform(0, 0.1, (2, 6, n_resp)))  # fmt: skip
    found = analyse(stats, cfg)
    res = PreplanResult.found(
        found, config=cfg, model="m", prompt="p", response="r", generated=False, n_prompt=n_prompt,
        tokens=tuple(f"t{i}" for i in range(n_resp)), token_ids=np.arange(n_resp), layers=(0, 1),
    )  # fmt: skip
    return PreplanRun(config=cfg, model="m", ids=("q",), results=(res,), windows=windows)


def test_preplan_checks_the_windows_of_the_chosen_layers():
    # windows longer than the 50-token text: spans and FAI mean what the paper means
    run = _preplan_run((None, 4096))
    assert [(c.name, c.passed) for c in run.checks] == [("windowed_layers_shorter_than_text", True)]
    # only global layers: nothing to check, so no check (issue 30: it passed by construction)
    assert _preplan_run((None, None)).checks == ()
    # a 40-token window in a 50-token text caps spans; FAI's band (10, 100) reaches past it
    run = _preplan_run((None, 40))
    assert [c.name for c in failed(run.checks)] == ["windowed_layers_shorter_than_text", "band_within_window"]
    assert "layer 1 (W=40)" in run.checks[0].detail and run.summary()["checks"][1]["threshold"] == 101


def test_too_few_items_to_beat_chance_says_so():
    few = _select_copy(True, n_q=2)  # a perfect head on 2 questions: the best of 6 guessers often is too
    (check,) = few.checks
    assert not check.passed and check.threshold == 1.0 and check.outcome == "not tested"  # issue 30: was "failed"
    assert "add questions" in check.untested
    assert "add samples" in _qr(True, n_s=1).checks[0].untested

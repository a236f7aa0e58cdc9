"""Retrieval grid scoring without a model: per-sample records -> result -> causal check, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.retrieval import (
    RetrievalConfig,
    RowTrace,
    combine,
    masking_conditions,
    masking_result,
    random_heads,
    response_rows,
    sample_record,
)
from interp.datasets.needles import NeedleSample
from interp.errors import InterpError


def _sample(key: str, answer: str = "smoked paprika") -> NeedleSample:
    # prompt 8 tokens, the answer (40 50) at [3, 5); response 30 40 50
    return NeedleSample(
        key=key, length=8, depth=0.5, needle_id=key[-1], prompt_ids=(1, 2, 30, 40, 50, 60, 3, 4),
        response_ids=(30, 40, 50), needle_span=(2, 6), answer_span=(3, 5), response_answer_span=(1, 3),
        answer=answer, haystack_depth=0.41666,
    )  # fmt: skip


def test_sample_record_holds_scores_events_and_recall():
    s = _sample("L8-d0.50-a")
    top1 = torch.tensor([[[2, 3, 4], [2, 3, 1]]])  # [1 layer, 2 heads, 3 rows]
    trace = RowTrace(
        response_rows(8, 3), top1, torch.tensor([30, 40, 50]), torch.tensor([30, 40, 50]), torch.tensor(s.input_ids)
    )
    rec = sample_record(s, trace, "the answer is smoked paprika", seconds=1.23456)
    # head 0 copies 40 and 50 from the span (2 events / span 2), head 1 copies 40 only
    assert rec["scores"] == [[1.0, 0.5]] and rec["n_events"] == 3
    assert rec["recall"] == 1.0 and rec["answer"] == "the answer is smoked paprika"
    assert rec["n_tokens"] == 8 and rec["haystack_depth"] == 0.4167 and rec["seconds"] == 1.235
    assert sample_record(s, trace, "smoked ham", 0.0)["recall"] == 0.5


def _records():
    # three samples of a 2-layer x 3-head model; sample b is not counted (recall 0.2 < 0.5)
    scores = {
        "a": [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]],
        "b": [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
        "c": [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]],
    }
    recall = {"a": 1.0, "b": 0.2, "c": 0.5}
    samples = [_sample(f"L8-d0.50-{n}") for n in "abc"]
    records = {
        s.key: {"n_tokens": 8, "haystack_depth": 0.4, "recall": recall[s.key[-1]], "n_events": 2, "answer": "x",
                "seconds": 0.5, "scores": scores[s.key[-1]]}
        for s in samples
    }  # fmt: skip
    return samples, records


def test_combine_means_counted_samples_in_grid_order():
    samples, records = _records()
    result = combine("toy", RetrievalConfig(mask=False), samples, records, (2, 3))
    assert result.n_samples == 2 and result.masking is None and result.model == "toy"
    assert result.scores.tolist() == [[0.75, 0.0, 0.0], [0.0, 0.25, 0.0]]  # mean of a and c
    assert [r.key for r in result.samples] == [s.key for s in samples]
    assert [r.counted for r in result.samples] == [True, False, True]
    assert result.sample_scores.shape == (3, 2, 3)
    assert result.heads_above(16) == [(0, 0), (1, 1)]  # only heads scoring above 0
    assert result.heads_above(1) == [(0, 0)]
    with pytest.raises(InterpError, match="re-run with --fresh"):
        combine("toy", RetrievalConfig(), samples, records, (3, 2))


def test_masking_conditions_and_result_by_hand():
    samples, records = _records()
    config = RetrievalConfig(mask_top=2, mask_random=1, seeds=(4, 5))
    result = combine("toy", config, samples, records, (2, 3))
    conditions = masking_conditions(result.scores, config)
    assert conditions[0] == ("top", None, ((0, 0), (1, 1)))
    assert [(name, seed) for name, seed, _ in conditions[1:]] == [("random", 4), ("random", 5)]
    for _, seed, heads in conditions[1:]:
        assert heads == tuple(random_heads(result.scores, 1, seed, [(0, 0), (1, 1)], config.threshold))
    keys = [s.key for s in samples]
    recalls = {
        ("top", None): dict(zip(keys, [0.0, 0.0, 0.3])),
        ("random", 4): dict(zip(keys, [1.0, 0.2, 0.5])),
        ("random", 5): dict(zip(keys, [0.8, 0.2, 0.5])),
    }
    m = masking_result(result, conditions, recalls)
    assert (m.k_top, m.k_random, m.seeds) == (2, 1, (4, 5))
    assert m.recall_unmasked == pytest.approx((1.0 + 0.2 + 0.5) / 3)  # every sample, counted or not
    assert m.recall_top == pytest.approx(0.1)
    assert m.recall_random == pytest.approx(((1.0 + 0.2 + 0.5) / 3, (0.8 + 0.2 + 0.5) / 3))
    assert m.per_sample[0] == {"key": keys[0], "recall_top_masked": 0.0, "recall_random_masked": pytest.approx(0.9)}
    assert list(m.to_dataframe()["condition"]) == ["unmasked", "top", "random", "random"]
    with pytest.raises(InterpError, match="larger than the model's 6 heads"):
        masking_conditions(result.scores, RetrievalConfig(mask_top=7))


def test_masking_conditions_need_scores():
    with pytest.raises(InterpError, match="no sample counted"):
        masking_conditions(np.full((2, 3), np.nan), RetrievalConfig(mask_top=1))


def test_describe_states_the_finding_and_the_causal_check():
    from dataclasses import replace

    from interp.experiments.retrieval import EXPERIMENT, describe

    samples, records = _records()
    config = RetrievalConfig(mask_top=2, mask_random=1, seeds=(4, 5))
    result = combine("toy", config, samples, records, (2, 3))
    text = (
        "2 of 6 heads (33.3%) are retrieval heads (copy score > 0.1; Wu et al. 2024 report under 5%), over 2 of 3 "
        "needle samples the model answered (2 lengths (512, 1024 tokens) x 3 depths, mean recall 0.57). "
        "Top heads: L0H0 (0.75), L1H1 (0.25), L0H1 (0.00), L0H2 (0.00), L1H0 (0.00)."
    )
    assert describe(result) == text
    keys = [s.key for s in samples]
    recalls = {
        ("top", None): dict.fromkeys(keys, 0.1),
        ("random", 4): dict(zip(keys, [1.0, 0.2, 0.5])),
        ("random", 5): dict.fromkeys(keys, 0.5),
    }
    masked = replace(result, masking=masking_result(result, masking_conditions(result.scores, config), recalls))
    assert describe(masked) == text + (
        " Masking the top 2 heads drops needle recall from 0.57 to 0.10; masking 1 random heads gives 0.53 (sd 0.05 over 2 seeds)."
    )
    assert set(EXPERIMENT.tables(masked)) == {"heads", "samples"}  # the command's files, as before
    assert set(EXPERIMENT.report.tables(masked)) == {"heads", "samples", "masking"}  # the report's
    assert EXPERIMENT.summary(masked)["masking"]["k_top"] == 2
    assert [row["condition"] for row in EXPERIMENT.record(masked)["masking"]] == ["unmasked", "top", "random", "random"]
    none = {key: {**rec, "recall": 0.0} for key, rec in records.items()}
    unanswered = combine("toy", config, samples, none, (2, 3))
    assert EXPERIMENT.record(unanswered)["masking"].startswith("skipped: no sample counted")
    assert EXPERIMENT.report.config(True, {}) == RetrievalConfig(lengths=(192,), depths=(0.5,), mask=False)

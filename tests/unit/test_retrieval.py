"""Retrieval-head scoring: the pure functions on synthetic top-1 / token arrays, answers by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp.analyses.retrieval import (
    RetrievalConfig,
    RowTrace,
    aggregate,
    copy_events,
    default_k,
    random_heads,
    response_rows,
    rouge1_recall,
    sample_scores,
    score_trace,
    share_above,
    top_heads,
)
from interp.datasets.needles import NeedleSample
from interp.errors import InterpError


def test_copy_event_needs_span_and_same_token():
    # sequence: positions 0..9; the answer span is [4, 7) holding tokens 40, 50, 60
    tokens = torch.tensor([1, 2, 3, 9, 40, 50, 60, 7, 40, 50])
    emitted = torch.tensor([40, 50, 60])
    top1 = torch.tensor(
        [
            [
                [4, 5, 6],  # head 0: copies every answer token
                [4, 4, 6],  # head 1: row 1 points at token 40 but emitted 50 -> no event there
                [8, 9, 0],
            ],  # head 2: same tokens, but outside the span (a later repeat) -> none
        ]
    )  # [layer=1, head=3, rows=3]
    ev = copy_events(top1, tokens, emitted, (4, 7))
    expected = torch.tensor([[[True, True, True], [True, False, True], [False, False, False]]])
    assert torch.equal(ev, expected)


def test_copy_event_span_is_half_open():
    tokens = torch.tensor([5, 6, 7, 8])
    ev = copy_events(torch.tensor([[[1, 3]]]), tokens, torch.tensor([6, 8]), (1, 3))
    assert ev.tolist() == [[[True, False]]]  # position 3 is the span end, not inside


def test_sample_scores_counts_valid_rows_over_span_length():
    events = torch.tensor([[[True, True, False, True], [False, True, True, True]]])  # [1, 2, 4]
    valid = torch.tensor([True, False, True, True])
    s = sample_scores(events, valid, span_length=4)
    assert s.dtype == torch.float64
    assert s.tolist() == [[2 / 4, 2 / 4]]
    with pytest.raises(InterpError):
        sample_scores(events, valid, span_length=0)


def test_rouge1_recall_by_hand():
    ref = "a spoonful of smoked paprika"
    assert rouge1_recall("The secret is a spoonful of smoked paprika.", ref) == 1.0
    assert rouge1_recall("a spoonful of sugar", ref) == pytest.approx(3 / 5)
    assert rouge1_recall("A SPOONFUL, of... Smoked-Paprika!", ref) == 1.0  # case and punctuation
    assert rouge1_recall("a a a", "a b") == pytest.approx(1 / 2)  # clipped counts
    assert rouge1_recall("", ref) == 0.0
    assert rouge1_recall("anything", "") == 0.0


def test_aggregate_means_counted_samples_only():
    per = np.array([[[1.0, 0.0]], [[0.5, 0.5]], [[0.0, 1.0]]])  # 3 samples, 1 layer, 2 heads
    mean, n = aggregate(per, [True, False, True])
    assert n == 2
    assert mean.tolist() == [[0.5, 0.5]]
    none, n0 = aggregate(per, [False, False, False])
    assert n0 == 0 and np.isnan(none).all()
    with pytest.raises(InterpError):
        aggregate(per, [True])


def test_share_above_is_strict():
    scores = np.array([[0.1, 0.2], [0.0, 0.11]])
    assert share_above(scores, 0.1) == 0.5
    assert math.isnan(share_above(np.full((2, 2), np.nan)))


def test_top_heads_order_and_ties():
    scores = np.array([[0.2, 0.9, 0.2], [0.5, 0.2, 0.0]])
    assert top_heads(scores, 3) == [(0, 1), (1, 0), (0, 0)]  # 0.2 tie: smallest (layer, head) first
    assert top_heads(scores, 5)[3:] == [(0, 2), (1, 1)]
    with pytest.raises(InterpError):
        top_heads(np.full((2, 2), np.nan), 1)


def test_random_heads_avoid_top_and_retrieval_heads():
    scores = np.zeros((4, 5))
    scores[0, 0], scores[1, 1], scores[2, 2] = 0.9, 0.5, 0.3  # three retrieval heads (> 0.1)
    top = [(0, 0)]
    draws = [random_heads(scores, 4, seed, top) for seed in range(5)]
    for d in draws:
        assert len(set(d)) == 4
        assert not {(0, 0), (1, 1), (2, 2)} & set(d)
    assert random_heads(scores, 4, 3, top) == draws[3]  # deterministic per seed
    assert len({tuple(d) for d in draws}) > 1  # seeds differ
    # fewer non-retrieval heads than k: any head outside the top set is eligible
    dense = np.full((2, 2), 0.5)
    got = random_heads(dense, 3, 0, [(0, 0)])
    assert sorted(got) == [(0, 1), (1, 0), (1, 1)]
    with pytest.raises(InterpError):
        random_heads(dense, 4, 0, [(0, 0)])


def test_default_k_is_five_percent_rounded_at_least_one():
    assert default_k(270) == 14  # SmolLM2: 30 x 9 heads, 13.5 -> 14
    assert default_k(1024) == 51
    assert default_k(12) == 1
    assert default_k(4) == 1


def test_response_rows_predict_each_response_token():
    assert response_rows(10, 3).tolist() == [9, 10, 11]


def test_config_validation():
    RetrievalConfig().mask_sizes(270)
    with pytest.raises(InterpError, match="larger than"):
        RetrievalConfig(mask_top=300).mask_sizes(270)
    with pytest.raises(InterpError, match="mask-random"):
        RetrievalConfig(mask_top=200, mask_random=100).mask_sizes(270)
    with pytest.raises(InterpError, match="mode"):
        RetrievalConfig(mode="beam")
    with pytest.raises(InterpError, match="depths"):
        RetrievalConfig(depths=(0.5, 1.5))
    with pytest.raises(InterpError, match="lengths"):
        RetrievalConfig(lengths=(0,))
    with pytest.raises(InterpError, match="seeds is empty"):
        RetrievalConfig(seeds=())
    assert RetrievalConfig().settings()["lengths"] == [512, 1024]
    assert RetrievalConfig().mask_sizes(270) == (14, 14)
    assert RetrievalConfig(mask_top=3).mask_sizes(270) == (3, 3)
    assert RetrievalConfig(mask_top=3, mask_random=5).mask_sizes(270) == (3, 5)
    with pytest.raises(InterpError, match="batch_size"):
        RetrievalConfig(batch_size=0)
    assert RetrievalConfig().batch_for(torch.device("cpu")) == 1  # batching measured slower on CPU
    assert RetrievalConfig().batch_for(torch.device("cuda")) == 4
    assert RetrievalConfig(batch_size=3).batch_for(torch.device("cpu")) == 3


def _sample(prompt, response, answer_span, response_answer_span):
    return NeedleSample(
        key="k",
        length=len(prompt),
        depth=0.5,
        needle_id="n",
        prompt_ids=tuple(prompt),
        response_ids=tuple(response),
        needle_span=(answer_span[0] - 1, answer_span[1] + 1),
        answer_span=answer_span,
        response_answer_span=response_answer_span,
        answer="x",
        haystack_depth=0.5,
    )


def test_score_trace_teacher_scores_only_rows_where_greedy_matches():
    # prompt: 8 tokens, needle answer tokens 40 50 at [3, 5); response: 30 40 50 (restated needle)
    prompt = [1, 2, 30, 40, 50, 60, 3, 4]
    response = [30, 40, 50]
    sample = _sample(prompt, response, (3, 5), (1, 3))
    tokens = torch.tensor(prompt + response)
    top1 = torch.tensor([[[2, 3, 4], [2, 3, 1]]])  # [1 layer, 2 heads, 3 rows]
    emitted = torch.tensor([30, 40, 99])  # row 2: the model's greedy token is wrong
    trace = RowTrace(response_rows(8, 3), top1, emitted, torch.tensor(response), tokens)
    events, scores = score_trace(trace, sample)
    # head 0: row 0 points at 30 (outside the answer span), row 1 copies 40, row 2 invalid
    assert events.tolist() == [[[False, True, False], [False, True, False]]]
    assert scores.tolist() == [[0.5, 0.5]]
    # decode trace (no reference): every row counts, the emitted token decides
    dec = RowTrace(response_rows(8, 3), top1, torch.tensor([30, 40, 50]), None, tokens, stopped=False)
    _, dscores = score_trace(dec, sample)
    assert dscores.tolist() == [[1.0, 0.5]]
    stopped = RowTrace(response_rows(8, 3), top1, torch.tensor([30, 40, 2]), None, tokens, stopped=True)
    assert stopped.answer_ids() == [30, 40]

"""Retrieval scoring on the embedded SmolLM2-135M-Instruct: one short needle sample.

The scorer's top-1 (streaming kernel rows) must be the argmax of a float64 attention row
materialised here from captured q/k, where the model copies the needle the teacher-forced
events must equal those of the paper's greedy decode loop, and scoring a small grid with
shared prefixes must give the traces of one full pass per sample.
"""

from __future__ import annotations

import pytest
import torch

from interp.analyses.retrieval import RetrievalConfig, rouge1_recall, score_trace
from interp.experiments.retrieval import decode_trace, prepare_samples, teacher_trace, teacher_traces

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soup_sample(embedded):
    samples, _ = prepare_samples(embedded, RetrievalConfig(lengths=(200,), depths=(0.5,)))
    return next(s for s in samples if s.needle_id == "soup")


def test_top1_is_the_argmax_of_a_float64_attention_row(embedded, soup_sample):
    from interp.hooks import capture

    lm, s = embedded, soup_sample
    trace = teacher_trace(lm, s, backend="torch")
    ids = torch.tensor([s.input_ids])
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    rows = trace.positions
    kv = torch.tensor(lm.arch.kv_map)
    near_ties = 0
    for layer in range(lm.arch.n_layers):
        q = cap["q", layer][0, :, rows].double()  # [head, n_rows, d_head]
        k = cap["k", layer][0].double()[kv]  # [head, pos, d_head], kv head of each query head
        scores = (q @ k.transpose(-1, -2)) * lm.arch.scale
        visible = torch.arange(ids.shape[1])[None, :] <= rows[:, None]
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        best = probs.argmax(-1)
        got = trace.top1[layer]
        same = got == best
        if not same.all():
            # only acceptable where the float64 row has a near-tie between the two picks
            p_got = probs.gather(-1, got[..., None])[..., 0]
            p_best = probs.gather(-1, best[..., None])[..., 0]
            assert ((p_best - p_got)[~same] < 1e-5).all(), f"layer {layer}: top1 is not the argmax"
            near_ties += int((~same).sum())
    assert near_ties <= 2


def test_copying_model_gives_decode_identical_events(embedded, soup_sample):
    lm, s = embedded, soup_sample
    teacher = teacher_trace(lm, s)
    assert rouge1_recall(lm.tokenizer.decode(teacher.answer_ids()), s.answer) == 1.0
    events_t, scores_t = score_trace(teacher, s)
    assert (scores_t > 0.1).any()  # regression guard (one run): retrieval heads exist
    assert (scores_t > 0.1).float().mean() < 0.25  # ... and they are few
    decode = decode_trace(lm, s, max_new_tokens=len(s.response_ids) + 2)
    n = len(s.response_ids)
    assert decode.answer_ids()[:n] == list(s.response_ids), "the model no longer restates the needle"
    events_d, _ = score_trace(decode, s)
    assert torch.equal(events_t, events_d[..., :n])


def test_shared_prefix_grid_equals_one_pass_per_sample(embedded):
    from interp.hooks.prefix import prefix_tree, tree_cost

    samples, _ = prepare_samples(embedded, RetrievalConfig(lengths=(200, 320), depths=(0.0, 0.6)))
    assert tree_cost(prefix_tree([s.input_ids for s in samples])) < 0.7 * sum(len(s.input_ids) for s in samples)
    for sample, got in zip(samples, teacher_traces(embedded, samples)):
        alone = teacher_trace(embedded, sample)
        assert torch.equal(got.emitted, alone.emitted), sample.key
        assert torch.equal(got.top1, alone.top1), f"{sample.key}: {(got.top1 != alone.top1).sum()} top-1 cells differ"

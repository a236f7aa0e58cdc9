"""Copy events and per-sample scores of retrieval heads (Wu et al. 2024), from top-1 statistics.

Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality") score a head
by how often it *copies* the answer out of the needle while the model writes it: at each
emitted token w_t, j* = top1 of the query row that produced w_t; the head earns
1 / |answer span| when j* lies in the needle's answer span and token[j*] == w_t. A sample
counts only when the model's answer has ROUGE-1 recall >= 0.5 against the reference.

This module is the per-sample part, pure: a `RowTrace` holds the scored rows of one sample
(their top-1 key positions per head, the emitted and forced tokens), as the runner
`interp.experiments.retrieval` captured them; `score_trace` turns it into copy events and the
per-head sample score, `sample_record` into the resume log's record. Grid-level aggregation is
`interp.analyses.retrieval.results`, the causal check `interp.analyses.retrieval.masking`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.datasets.needles import NeedleSample
from interp.errors import InterpError

__all__ = ["RowTrace", "response_rows", "copy_events", "sample_scores", "score_trace", "rouge1_recall", "sample_record"]


def response_rows(n_prompt: int, n_response: int) -> Int[Tensor, " n_rows"]:
    """Positions whose logits predict each response token: n_prompt - 1 ... n_prompt + n_response - 2."""
    return torch.arange(n_prompt - 1, n_prompt + n_response - 1)


def copy_events(
    top1: Int[Tensor, "layer head n_rows"],
    tokens: Int[Tensor, " pos"],
    emitted: Int[Tensor, " n_rows"],
    answer_span: tuple[int, int],
) -> Bool[Tensor, "layer head n_rows"]:
    """Wu et al.'s copy event: top1 inside the answer span and the token there == the emitted token.

    Args:
        top1: key position of each head's top-1 attention, per scored row.
        tokens: token ids of the sequence the keys index.
        emitted: the token each row emitted.
        answer_span: [start, end) of the answer inside the needle, in ``tokens``.
    """
    start, end = answer_span
    inside = (top1 >= start) & (top1 < end)
    at = tokens[top1.clamp(0, tokens.numel() - 1)]
    return inside & (at == emitted.view(1, 1, -1))


def sample_scores(
    events: Bool[Tensor, "layer head n_rows"], valid: Bool[Tensor, " n_rows"], span_length: int
) -> Float[Tensor, "layer head"]:
    """Per-head score of one sample: events on valid rows / |answer span| (float64)."""
    if span_length < 1:
        raise InterpError("the answer span is empty: the needle's answer must cover at least one token")
    return (events & valid.view(1, 1, -1)).sum(-1).to(torch.float64) / span_length


def _rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenisation: lower case, non-alphanumerics -> space, split."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def rouge1_recall(candidate: str, reference: str) -> float:
    """ROUGE-1 recall: clipped unigram overlap / reference unigrams (no stemming).

    Wu et al. use ``rouge_score`` with the Porter stemmer; without stemming a word counts
    only in the same form, which matters little for short copied answers.
    """
    ref = Counter(_rouge_tokens(reference))
    if not ref:
        return 0.0
    cand = Counter(_rouge_tokens(candidate))
    return sum(min(n, cand[w]) for w, n in ref.items()) / sum(ref.values())


@dataclass(frozen=True, eq=False)
class RowTrace:
    """The rows one sample is scored on.

    Attributes:
        positions: [n_rows] absolute query position of each row.
        top1: [layer, head, n_rows] key position of each head's top-1 attention.
        emitted: [n_rows] the model's greedy token at each row.
        reference: [n_rows] the forced next token (teacher mode) or None (decode mode).
        tokens: [pos] token ids the keys index (prompt, then response or generated tokens).
        stopped: decode mode: whether the last emitted token was a stop token.
    """

    positions: Int[Tensor, " n_rows"]
    top1: Int[Tensor, "layer head n_rows"]
    emitted: Int[Tensor, " n_rows"]
    reference: Optional[Int[Tensor, " n_rows"]]
    tokens: Int[Tensor, " pos"]
    stopped: bool = False

    @property
    def valid(self) -> Bool[Tensor, " n_rows"]:
        """Rows that count: greedy == forced token (teacher), every step (decode)."""
        if self.reference is None:
            return torch.ones_like(self.emitted, dtype=torch.bool)
        return self.emitted == self.reference

    def answer_ids(self) -> list[int]:
        """Token ids of the model's answer (decode: without the final stop token)."""
        ids = self.emitted.tolist()
        return ids[:-1] if self.stopped else ids


def score_trace(
    trace: RowTrace, sample: NeedleSample
) -> tuple[Bool[Tensor, "layer head n_rows"], Float[Tensor, "layer head"]]:
    """(events [layer, head, n_rows] on valid rows, per-head sample score [layer, head])."""
    events = copy_events(trace.top1, trace.tokens, trace.emitted, sample.answer_span) & trace.valid.view(1, 1, -1)
    span = sample.answer_span[1] - sample.answer_span[0]
    return events, sample_scores(events, trace.valid, span)


def sample_record(sample: NeedleSample, trace: RowTrace, answer: str, seconds: float) -> dict:
    """The resume log's record of one traced sample (JSON-able; a row of samples.csv with its scores).

    Args:
        answer: the text of ``trace.answer_ids()`` (the model's answer), scored against the needle.
        seconds: wall time the sample took.
    """
    events, scores = score_trace(trace, sample)
    return {
        "length": sample.length,
        "depth": sample.depth,
        "needle_id": sample.needle_id,
        "n_tokens": sample.n_prompt,
        "haystack_depth": round(sample.haystack_depth, 4),
        "recall": rouge1_recall(answer, sample.answer),
        "n_events": int(events.sum()),
        "answer": answer,
        "seconds": round(seconds, 3),
        "scores": scores.tolist(),
    }

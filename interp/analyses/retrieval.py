"""Retrieval heads: needle-in-a-haystack copy scores per head (Wu et al. 2024).

Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality") score a head
by how often it *copies* the answer out of the needle while the model writes it: at each
emitted token w_t, j* = top1 of the query row that produced w_t; the head earns
1 / |answer span| when j* lies in the needle's answer span and token[j*] == w_t. A sample
counts only when the model's answer has ROUGE-1 recall >= 0.5 against the reference; a head's
score is the mean over counted samples; a head with score > 0.1 is a retrieval head.

The paper decodes greedily with eager attention and ``output_attentions`` to read j*. Here
j* comes from `interp.kernels.attention_stats` (``top1`` of the needed query rows only; the
attention matrix is never built):

- ``mode="teacher"`` (default): one forward pass on prompt + response. The rows are the
  positions that predict each response token; a row is scored when the model's own greedy
  token (argmax of its logits) equals the forced token, so while the model copies correctly
  the rows, their prefixes and hence their events are exactly those of greedy decoding.
  The response is the needle sentence (``response="needle"``: models asked about a needle
  restate it, "The secret ingredient ... is a spoonful of smoked paprika."), or the bare
  answer (``response="answer"``).
- ``mode="decode"``: the paper's loop (the last prompt token is fed as the first step, then
  greedy steps with a KV cache, stopping after a newline or end-of-sequence token, at most 50
  steps); the kernel computes only the decode rows (each step's new query against the keys
  it sees; the rows are collected and reduced in one kernel call per layer after the loop).

Across the grid, the samples share long token prefixes (the template and the haystack up to
the earliest needle; everything before the needle for the needles at one length and depth).
With ``share_prefix`` (the default) both modes and the masking check walk a prefix tree of the
samples with a reused KV cache (`interp.analyses.shared_prefix`): each shared position is
computed once, and the results are those of one pass per sample.

The causal check masks heads by making their attention uniform (`interp.hooks.uniform_attention`,
query set to zero) and re-runs the needle task: recall unmasked, with the top-K heads masked,
and with K random non-retrieval heads masked (several seeds). K defaults to 5% of all heads.

Pure functions (`copy_events`, `sample_scores`, `rouge1_recall`, `aggregate`, `top_heads`,
`random_heads`, ...) work on synthetic arrays; `score_retrieval` is the thin driver that runs
the model, resumes from a `interp.runs.SampleLog`, and writes heads.csv, samples.csv and
run.json. Samples are built by `interp.analyses.needles`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.analyses.needles import (
    Haystack,
    NeedleSample,
    PromptTemplate,
    build_samples,
    load_needles,
    read_haystack,
    stdlib_sentences,
)
from interp.errors import InterpError

__all__ = [
    "RetrievalConfig",
    "RetrievalResult",
    "SampleRecord",
    "MaskingResult",
    "RowTrace",
    "score_retrieval",
    "prepare_samples",
    "teacher_trace",
    "teacher_traces",
    "teacher_answers",
    "decode_trace",
    "decode_traces",
    "decode_answers",
    "score_trace",
    "needle_recall",
    "paper_decode_trace",
    "stop_token_ids",
    "greedy_decode",
    "copy_events",
    "sample_scores",
    "rouge1_recall",
    "aggregate",
    "share_above",
    "top_heads",
    "random_heads",
    "default_k",
    "response_rows",
]

Head = tuple[int, int]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalConfig:
    """What `score_retrieval` runs.

    The defaults are sized so that the whole run, masking check included, takes a few minutes
    on two CPU cores with the embedded 135M model. The paper's grid is lengths spread over the
    model's context and depths 0..100% in 10 steps: for SmolLM2 (context 8192) that is
    ``lengths=(1024, 2048, ..., 8192)``, ``depths=tuple(i / 10 for i in range(11))``.

    Attributes:
        lengths: prompt lengths in tokens (each sample is at most this long, short by less
            than one haystack sentence).
        depths: needle depths, fractions of the haystack (0 = start, 1 = end).
        needles: JSONL file of needles; None = the shipped ``interp/data/needles.jsonl``.
        haystack: text files for the haystack; () = Python standard-library docstrings.
        mode: "teacher" (one forward per sample) or "decode" (the paper's greedy loop).
        response: teacher forcing feeds "needle" (the needle sentence) or "answer".
        max_new_tokens: decode mode's step limit (the paper's 50).
        min_recall: a sample counts when ROUGE-1 recall of the model's answer >= this.
        threshold: a head is a retrieval head when its score > this (the paper's 0.1).
        mask: run the causal check (top-K vs random-K masking).
        mask_top: K of the top-K heads masked; None = 5% of all heads (at least 1).
        mask_random: K of the random heads masked; None = the same K as ``mask_top``.
        seeds: one random-K draw per seed (the spread across seeds is reported).
        backend: `interp.kernels` backend ("auto", "torch", "triton", "reference").
        share_prefix: compute each shared token prefix of the grid once and reuse its KV
            cache (`interp.analyses.shared_prefix`; HF backend; both modes and the masking
            check; same results as one pass per sample). False = each sample on its own.
        batch_size: with ``share_prefix``, at most this many samples that differ only after
            a shared prefix (e.g. the needles at one length and depth) run as one batch.
            None = 1 on CPU (measured: batching there only adds padding and cache copies,
            benchmarks/RESULTS.md) and 4 on CUDA.
    """

    lengths: tuple[int, ...] = (512, 1024)  # tokens; the paper's grid goes to the context (8192)
    depths: tuple[float, ...] = (0.1, 0.5, 0.9)  # the paper: 0.0, 0.1, ..., 1.0
    needles: Optional[str] = None  # None: interp/data/needles.jsonl (3 needles)
    haystack: tuple[str, ...] = ()  # (): stdlib docstrings
    mode: str = "teacher"  # or "decode" (the paper's loop)
    response: str = "needle"  # teacher forcing feeds the needle sentence; or "answer"
    max_new_tokens: int = 50  # decode-mode step limit (Wu et al.)
    min_recall: float = 0.5  # ROUGE-1 recall for a sample to count (Wu et al.)
    threshold: float = 0.1  # retrieval head: score > threshold (Wu et al.)
    mask: bool = True  # run the causal check
    mask_top: Optional[int] = None  # None: 5% of heads
    mask_random: Optional[int] = None  # None: same as mask_top
    seeds: tuple[int, ...] = (0, 1, 2)  # random-K draws
    backend: str = "auto"  # interp.kernels backend
    share_prefix: bool = True  # reuse the KV cache of shared token prefixes (exact)
    batch_size: Optional[int] = None  # samples per batch below a shared prefix; None: 1 on CPU, 4 on CUDA

    def validate(self, n_heads_total: Optional[int] = None) -> None:
        """Raise `InterpError` on settings outside their range (K checked when the head count is given)."""
        if not self.lengths or not all(isinstance(x, int) and x > 0 for x in self.lengths):
            raise InterpError(f"lengths must be positive token counts, got {self.lengths!r}")
        if not self.depths or not all(0.0 <= float(d) <= 1.0 for d in self.depths):
            raise InterpError(f"depths must lie in [0, 1] (fractions of the haystack), got {self.depths!r}")
        if len(set(self.lengths)) != len(self.lengths) or len(set(self.depths)) != len(self.depths):
            raise InterpError("lengths and depths must not repeat a value")
        if self.mode not in ("teacher", "decode"):
            raise InterpError(f"mode must be 'teacher' or 'decode', got {self.mode!r}")
        if self.response not in ("needle", "answer"):
            raise InterpError(f"response must be 'needle' or 'answer', got {self.response!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise InterpError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not 0.0 <= self.min_recall <= 1.0:
            raise InterpError(f"min_recall must lie in [0, 1], got {self.min_recall} (Wu et al. use 0.5)")
        if not 0.0 <= self.threshold < 1.0:
            raise InterpError(f"threshold must lie in [0, 1), got {self.threshold} (Wu et al. use 0.1)")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise InterpError(f"batch_size must be None or an int >= 1, got {self.batch_size!r}")
        if self.mask and not self.seeds:
            raise InterpError("seeds is empty: give at least one seed for the random-K masking (or mask=False)")
        for name in ("mask_top", "mask_random"):
            k = getattr(self, name)
            if k is not None and not (isinstance(k, int) and k >= 1):
                raise InterpError(f"{name} must be None or an int >= 1, got {k!r}")
        if n_heads_total is not None and self.mask:
            k_top, k_random = self.mask_sizes(n_heads_total)
            if k_top > n_heads_total:
                raise InterpError(f"--mask-top {k_top} is larger than the model's {n_heads_total} heads: use K <= {n_heads_total}")
            if k_random > n_heads_total - k_top:
                raise InterpError(
                    f"--mask-random {k_random} is too large: random heads are drawn from the {n_heads_total - k_top} "
                    f"heads outside the top {k_top}; use K <= {n_heads_total - k_top}"
                )

    def batch_for(self, device: torch.device) -> int:
        """The batch size on ``device`` (``batch_size``, or its default there)."""
        if self.batch_size is not None:
            return self.batch_size
        return 4 if device.type == "cuda" else 1

    def mask_sizes(self, n_heads_total: int) -> tuple[int, int]:
        """(K top, K random) for a model with ``n_heads_total`` heads."""
        k_top = self.mask_top if self.mask_top is not None else default_k(n_heads_total)
        return k_top, self.mask_random if self.mask_random is not None else k_top

    def settings(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def default_k(n_heads_total: int, share: float = 0.05) -> int:
    """5% of all heads, rounded, at least 1 (the paper's "fewer than 5% are retrieval heads")."""
    return max(1, int(math.floor(share * n_heads_total + 0.5)))


# --------------------------------------------------------------------------------------------
# pure scoring functions
# --------------------------------------------------------------------------------------------


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


def aggregate(per_sample: Float[np.ndarray, "n layer head"], counted: Sequence[bool]) -> tuple[np.ndarray, int]:
    """Mean per-head score over counted samples, and their number (scores NaN when none counts)."""
    per_sample = np.asarray(per_sample, dtype=np.float64)
    mask = np.asarray(counted, dtype=bool)
    if mask.shape[0] != per_sample.shape[0]:
        raise InterpError("counted must have one flag per sample")
    if not mask.any():
        return np.full(per_sample.shape[1:], np.nan), 0
    return per_sample[mask].mean(axis=0), int(mask.sum())


def share_above(scores: np.ndarray, threshold: float = 0.1) -> float:
    """Share of heads with score > threshold (NaN when the scores are undefined)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).all():
        return float("nan")
    return float((scores > threshold).mean())


def top_heads(scores: np.ndarray, k: int) -> list[Head]:
    """The k highest-scoring (layer, head), best first; ties broken by (layer, head)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).all():
        raise InterpError("no sample counted, so the scores are undefined and there are no top heads")
    flat = np.nan_to_num(scores, nan=-np.inf).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))  # by score desc, then index asc
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order[:k]]


def random_heads(scores: np.ndarray, k: int, seed: int, exclude: Sequence[Head], threshold: float = 0.1) -> list[Head]:
    """k random heads for the control: drawn from non-retrieval heads (score <= threshold).

    Wu et al. mask random *non-retrieval* heads. Heads in ``exclude`` (the top-K) are never
    drawn; when fewer than k non-retrieval heads remain, every head outside ``exclude`` is
    eligible.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_layers, n_heads = scores.shape
    banned = set(exclude)
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads) if (layer, head) not in banned]
    pool = [h for h in every if not scores[h] > threshold]
    if len(pool) < k:
        pool = every
    if len(pool) < k:
        raise InterpError(f"cannot draw {k} random heads from {len(pool)} eligible heads: lower --mask-random")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pool), size=k, replace=False)
    return sorted(pool[int(i)] for i in pick)


# --------------------------------------------------------------------------------------------
# traces: the scored rows of one sample
# --------------------------------------------------------------------------------------------


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

    positions: Tensor
    top1: Tensor
    emitted: Tensor
    reference: Optional[Tensor]
    tokens: Tensor
    stopped: bool = False

    @property
    def valid(self) -> Tensor:
        """Rows that count: greedy == forced token (teacher), every step (decode)."""
        if self.reference is None:
            return torch.ones_like(self.emitted, dtype=torch.bool)
        return self.emitted == self.reference

    def answer_ids(self) -> list[int]:
        """Token ids of the model's answer (decode: without the final stop token)."""
        ids = self.emitted.tolist()
        return ids[:-1] if self.stopped else ids


def score_trace(trace: RowTrace, sample: NeedleSample) -> tuple[Tensor, Tensor]:
    """(events [layer, head, n_rows] on valid rows, per-head sample score [layer, head])."""
    events = copy_events(trace.top1, trace.tokens, trace.emitted, sample.answer_span) & trace.valid.view(1, 1, -1)
    span = sample.answer_span[1] - sample.answer_span[0]
    return events, sample_scores(events, trace.valid, span)


def _stats_top1(lm, layer: int, q: Tensor, k: Tensor, rows: Optional[Tensor], backend: str) -> Tensor:
    from interp.kernels import attention_stats

    st = attention_stats(q, k, **lm.attention_kwargs(layer), query_rows=rows, columns=False, backend=backend)
    return st.top1[0]  # [head, n_rows]


def _logits_tail(lm, ids: Tensor, n: int) -> Tensor:
    """Logits [n, vocab] of the last n positions (HF: without computing the others)."""
    lm.check_length(int(ids.shape[-1]))
    if lm.backend == "hf":
        with torch.no_grad():
            return lm.hf_model(input_ids=ids, use_cache=False, logits_to_keep=n).logits[0, -n:]
    return lm.forward(ids)[0, -n:]


def teacher_trace(lm, sample: NeedleSample, *, backend: str = "auto", edits: Sequence = ()) -> RowTrace:
    """One forward pass on prompt + response; top1 of the response rows from the kernel.

    With ``edits`` (e.g. uniform attention on some heads) the same pass runs under
    `interp.hooks.intervene`; the kernel then sees the edited queries.
    """
    from interp.hooks import capture, intervene

    ids = torch.tensor([sample.input_ids], dtype=torch.long, device=lm.device)
    n_resp = len(sample.response_ids)
    rows = response_rows(sample.n_prompt, n_resp)
    top1: dict[int, Tensor] = {}

    def on_layer(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        top1[layer] = _stats_top1(lm, layer, q, k, rows.to(q.device), backend).cpu()

    with intervene(lm, list(edits)), capture(lm, keep=(), on_layer=on_layer):
        logits = _logits_tail(lm, ids, n_resp + 1)[:-1]
    if len(top1) != lm.arch.n_layers:
        raise InterpError(f"the kernel ran on {len(top1)} of {lm.arch.n_layers} layers: the hooks did not fire")
    return RowTrace(
        positions=rows,
        top1=torch.stack([top1[layer] for layer in range(lm.arch.n_layers)]),
        emitted=logits.argmax(-1).cpu(),
        reference=torch.tensor(sample.response_ids, dtype=torch.long),
        tokens=ids[0].cpu(),
    )


def teacher_traces(
    lm,
    samples: Sequence[NeedleSample],
    *,
    backend: str = "auto",
    edits: Sequence = (),
    batch_size: int = 1,
    chunk_size: int = 2048,
    on_trace=None,
) -> list[RowTrace]:
    """`teacher_trace` of many samples, each shared token prefix computed once (HF backend).

    The samples' prompt + response ids go into a prefix tree (`interp.analyses.shared_prefix`):
    the template and the haystack before the earliest needle are computed once for the whole
    grid, the text before each needle once for all needles there, and so on; the kernel
    computes only the response rows, from the edge that holds them. The traces equal those of
    `teacher_trace` on each sample (same rows, same q and k up to rounding).

    Args:
        batch_size, chunk_size: see `interp.analyses.shared_prefix.tree_rows`.
        on_trace: optional ``on_trace(index, trace)`` called as soon as a sample's trace is
            complete (samples finish in tree order, not input order).
    """
    from interp.analyses.shared_prefix import tree_rows

    def top1_rows(layer: int, q: Tensor, k: Tensor, rows: Tensor) -> Tensor:
        return _stats_top1(lm, layer, q, k, rows, backend)  # [head, n_rows]

    def build(i: int, got) -> RowTrace:
        s = samples[i]
        return RowTrace(
            positions=got.positions,
            top1=torch.stack([got.stats[layer] for layer in range(lm.arch.n_layers)]),
            emitted=got.greedy,
            reference=torch.tensor(s.response_ids, dtype=torch.long),
            tokens=torch.tensor(s.input_ids, dtype=torch.long),
        )

    traces: dict[int, RowTrace] = {}

    def done(i: int, got) -> None:
        traces[i] = build(i, got)
        if on_trace is not None:
            on_trace(i, traces[i])

    tree_rows(
        lm,
        [s.input_ids for s in samples],
        [response_rows(s.n_prompt, len(s.response_ids)).tolist() for s in samples],
        stats=top1_rows,
        edits=edits,
        batch_size=batch_size,
        chunk_size=chunk_size,
        on_done=done,
    )
    return [traces[i] for i in range(len(samples))]


def teacher_answers(lm, samples: Sequence[NeedleSample], *, edits: Sequence = (), batch_size: int = 1, on_answer=None) -> list[list[int]]:
    """The model's greedy tokens at each sample's response rows, shared prefixes once (no kernel).

    What `needle_recall` reads in teacher mode, for many samples (the masking check).

    Args:
        on_answer: optional ``on_answer(index, token_ids)`` called as each sample completes.
    """
    from interp.analyses.shared_prefix import tree_rows

    answers: dict[int, list[int]] = {}

    def done(i: int, got) -> None:
        answers[i] = got.greedy.tolist()
        if on_answer is not None:
            on_answer(i, answers[i])

    tree_rows(
        lm,
        [s.input_ids for s in samples],
        [response_rows(s.n_prompt, len(s.response_ids)).tolist() for s in samples],
        edits=edits,
        batch_size=batch_size,
        on_done=done,
    )
    return [answers[i] for i in range(len(samples))]


def stop_token_ids(lm) -> set[int]:
    """End-of-sequence ids of the tokenizer and generation config."""
    out: set[int] = set()
    for source in (getattr(lm.tokenizer, "eos_token_id", None), getattr(getattr(lm.hf_model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            out.add(source)
        elif isinstance(source, (list, tuple)):
            out.update(int(x) for x in source)
    return out


def _is_stop(lm, token: int, stops: set[int]) -> bool:
    return token in stops or (lm.tokenizer is not None and "\n" in lm.tokenizer.decode([token]))


def greedy_decode(lm, prompt_ids: Sequence[int], *, max_new_tokens: int = 50, on_step=None, past=None):
    """Wu et al.'s loop: prefill prompt[:-1] with a KV cache, feed the last prompt token, then
    greedy steps until a newline or end-of-sequence token (kept as the last token) or the limit.

    Args:
        on_step: optional ``on_step(step)`` called before each step's forward pass.
        past: optional ``DynamicCache`` already holding ``prompt_ids[:-1]`` (the prefill is
            then skipped; the steps append to it).

    Returns:
        (emitted token ids, whether it stopped on a stop token).
    """
    if lm.backend != "hf":
        raise InterpError("decode mode needs the HF backend (a KV cache); load the model with backend='hf' or use mode='teacher'")
    stops = stop_token_ids(lm)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=lm.device)
    lm.check_length(ids.shape[1])
    room = lm.arch.n_ctx - ids.shape[1]
    emitted: list[int] = []
    with torch.no_grad():
        cache = past
        if past is not None and past.get_seq_length() != ids.shape[1] - 1:
            raise InterpError(f"the cache holds {past.get_seq_length()} positions, not the {ids.shape[1] - 1} of prompt[:-1]")
        if past is None and ids.shape[1] > 1:
            cache = lm.new_cache()  # keeps every key: windowed layers' keys stay aligned with positions
            lm.hf_model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = ids[:, -1:]
        for step in range(min(max_new_tokens, room + 1)):
            if on_step is not None:
                on_step(step)
            out = lm.hf_model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            emitted.append(nxt)
            if _is_stop(lm, nxt, stops):
                return emitted, True
            token = torch.tensor([[nxt]], dtype=torch.long, device=lm.device)
    return emitted, False


def decode_trace(lm, sample: NeedleSample, *, max_new_tokens: int = 50, backend: str = "auto", edits: Sequence = ()) -> RowTrace:
    """The paper's greedy loop; the kernel computes the decode rows only.

    Each step's query row (the new token's q) is kept per layer, and the keys seen at the last
    step (the whole cache) too; after the loop one kernel call per layer computes all decode
    rows at once: row r of the stacked queries sits at key index key_pos - n_steps + r, which
    is exactly the step's position, and causality hides the keys that step had not seen yet.
    The same q and k as step by step, with one kernel call per layer instead of one per step.
    """
    from interp.hooks import intervene

    with intervene(lm, list(edits)):
        return _decode_rows(lm, sample, max_new_tokens, backend, None)


def _decode_rows(lm, sample: NeedleSample, max_new_tokens: int, backend: str, past) -> RowTrace:
    """`decode_trace`'s loop and kernel call (edits, if any, are already attached)."""
    from interp.hooks import capture

    n_layers = lm.arch.n_layers
    q_rows: dict[int, list[Tensor]] = {layer: [] for layer in range(n_layers)}
    last_k: dict[int, Tensor] = {}
    decoding = [False]

    def on_step(step: int) -> None:
        decoding[0] = True

    def on_layer(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        if decoding[0]:  # the prefill runs before the first step: no rows are needed there
            q_rows[layer].append(q[:, :, -1:])
            last_k[layer] = k

    with capture(lm, keep=(), on_layer=on_layer):
        emitted, stopped = greedy_decode(lm, sample.prompt_ids, max_new_tokens=max_new_tokens, on_step=on_step, past=past)
    if any(len(q_rows[layer]) != len(emitted) for layer in range(n_layers)) or len(last_k) != n_layers:
        raise InterpError("the hooks did not fire on every layer of every decode step")
    top1 = torch.stack(
        [_stats_top1(lm, layer, torch.cat(q_rows[layer], dim=2), last_k[layer], None, backend).cpu() for layer in range(n_layers)]
    )
    n_prompt = sample.n_prompt
    return RowTrace(
        positions=torch.arange(n_prompt - 1, n_prompt - 1 + len(emitted)),
        top1=top1,
        emitted=torch.tensor(emitted, dtype=torch.long),
        reference=None,
        tokens=torch.tensor(list(sample.prompt_ids) + emitted, dtype=torch.long),
        stopped=stopped,
    )


def decode_traces(
    lm, samples: Sequence[NeedleSample], *, max_new_tokens: int = 50, backend: str = "auto", edits: Sequence = (), on_trace=None
) -> list[RowTrace]:
    """`decode_trace` of many samples, the prefill of each shared token prefix computed once (HF backend).

    The samples' ``prompt[:-1]`` go into a prefix tree (`interp.analyses.shared_prefix`); where
    a sample's prompt ends, its greedy loop starts from the cache the walk holds there, and
    its steps are cropped off again afterwards. Same traces as `decode_trace` on each sample.

    Args:
        on_trace: optional ``on_trace(index, trace)`` called as each sample's loop ends.
    """
    from interp.analyses.shared_prefix import tree_rows

    traces: dict[int, RowTrace] = {}

    def at_end(i: int, cache) -> None:
        traces[i] = _decode_rows(lm, samples[i], max_new_tokens, backend, cache)
        if on_trace is not None:
            on_trace(i, traces[i])

    tree_rows(lm, [s.prompt_ids[:-1] for s in samples], None, edits=edits, at_end=at_end)
    return [traces[i] for i in range(len(samples))]


def decode_answers(lm, samples: Sequence[NeedleSample], *, max_new_tokens: int = 50, edits: Sequence = (), on_answer=None) -> list[list[int]]:
    """The greedy loop's answer ids (stop token dropped) of many samples, shared prefills once (no kernel).

    Args:
        on_answer: optional ``on_answer(index, token_ids)`` called as each sample's loop ends.
    """
    from interp.analyses.shared_prefix import tree_rows

    answers: dict[int, list[int]] = {}

    def at_end(i: int, cache) -> None:
        emitted, stopped = greedy_decode(lm, samples[i].prompt_ids, max_new_tokens=max_new_tokens, past=cache)
        answers[i] = emitted[:-1] if stopped else emitted
        if on_answer is not None:
            on_answer(i, answers[i])

    tree_rows(lm, [s.prompt_ids[:-1] for s in samples], None, edits=edits, at_end=at_end)
    return [answers[i] for i in range(len(samples))]


def _answer_recall(lm, trace_ids: Sequence[int], sample: NeedleSample) -> tuple[float, str]:
    text = lm.tokenizer.decode(list(trace_ids)) if lm.tokenizer is not None else " ".join(map(str, trace_ids))
    return rouge1_recall(text, sample.answer), text


def needle_recall(lm, sample: NeedleSample, config: RetrievalConfig, edits: Sequence = ()) -> tuple[float, str]:
    """Recall of the model's answer with ``edits`` applied (no kernel: for the masking check)."""
    from interp.hooks import intervene

    if config.mode == "decode":
        with intervene(lm, list(edits)):
            emitted, stopped = greedy_decode(lm, sample.prompt_ids, max_new_tokens=config.max_new_tokens)
        return _answer_recall(lm, emitted[:-1] if stopped else emitted, sample)
    ids = torch.tensor([sample.input_ids], dtype=torch.long, device=lm.device)
    n = len(sample.response_ids)
    with intervene(lm, list(edits)):
        greedy = _logits_tail(lm, ids, n + 1)[:-1].argmax(-1).tolist()
    return _answer_recall(lm, greedy, sample)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRecord:
    """One scored sample (a row of samples.csv).

    ``seconds`` is the wall time since the previous sample finished: with shared prefixes a
    sample's cost includes the part of the shared prefix computed just before it.
    """

    key: str
    length: int
    depth: float
    needle_id: str
    n_tokens: int
    haystack_depth: float
    recall: float
    counted: bool
    n_events: int
    answer: str
    seconds: float


@dataclass(frozen=True)
class MaskingResult:
    """The causal check: needle recall with no heads, the top-K, or K random heads masked.

    Recalls are means over all samples of the grid; ``recall_random`` has one mean per seed.
    """

    k_top: int
    k_random: int
    top: tuple[Head, ...]
    random: tuple[tuple[Head, ...], ...]
    seeds: tuple[int, ...]
    recall_unmasked: float
    recall_top: float
    recall_random: tuple[float, ...]
    per_sample: tuple[dict, ...] = field(repr=False, default=())

    @property
    def recall_random_mean(self) -> float:
        return float(np.mean(self.recall_random))

    @property
    def recall_random_std(self) -> float:
        return float(np.std(self.recall_random, ddof=1)) if len(self.recall_random) > 1 else 0.0

    def to_dataframe(self) -> pd.DataFrame:
        """One row per condition: condition, seed, k, heads, recall."""
        fmt = lambda heads: " ".join(f"{layer}.{head}" for layer, head in heads)  # noqa: E731
        rows = [
            {"condition": "unmasked", "seed": None, "k": 0, "heads": "", "recall": self.recall_unmasked},
            {"condition": "top", "seed": None, "k": self.k_top, "heads": fmt(self.top), "recall": self.recall_top},
        ]
        rows += [
            {"condition": "random", "seed": s, "k": self.k_random, "heads": fmt(h), "recall": r}
            for s, h, r in zip(self.seeds, self.random, self.recall_random)
        ]
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        return {
            "k_top": self.k_top,
            "k_random": self.k_random,
            "top_heads": [f"{layer}.{head}" for layer, head in self.top],
            "seeds": list(self.seeds),
            "recall_unmasked": self.recall_unmasked,
            "recall_top_masked": self.recall_top,
            "recall_random_masked_mean": self.recall_random_mean,
            "recall_random_masked_std": self.recall_random_std,
            "recall_random_masked_per_seed": list(self.recall_random),
        }


@dataclass(frozen=True, eq=False)
class RetrievalResult:
    """Retrieval scores of every head of one model on one needle grid.

    Attributes:
        scores: [layer, head] mean score over counted samples (NaN when none counted).
        sample_scores: [n_samples, layer, head] each sample's per-head score.
        samples: one `SampleRecord` per sample of the grid, in grid order.
        n_samples: number of counted samples.
        masking: the causal check, or None when skipped.
        config: the settings used.
        model: the model's name.
        timings: seconds spent per stage.
    """

    scores: np.ndarray
    sample_scores: np.ndarray
    samples: tuple[SampleRecord, ...]
    n_samples: int
    masking: Optional[MaskingResult]
    config: RetrievalConfig
    model: str
    timings: dict

    @property
    def share(self) -> float:
        """Share of heads with score > threshold (the paper reports < 5%)."""
        return share_above(self.scores, self.config.threshold)

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The k best heads as (layer, head, score)."""
        if self.n_samples == 0:
            return []
        return [(layer, head, float(self.scores[layer, head])) for layer, head in top_heads(self.scores, k)]

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: layer, head, score, n_samples, retrieval (score > threshold), rank."""
        n_layers, n_heads = self.scores.shape
        layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
        flat = self.scores.ravel()
        rank = np.full(flat.size, -1)
        if self.n_samples:
            rank[[lh[0] * n_heads + lh[1] for lh in top_heads(self.scores, flat.size)]] = np.arange(1, flat.size + 1)
        return pd.DataFrame(
            {
                "layer": layer,
                "head": head,
                "score": flat,
                "n_samples": self.n_samples,
                "retrieval": flat > self.config.threshold,
                "rank": rank,
            }
        )

    def samples_dataframe(self) -> pd.DataFrame:
        """samples.csv: one row per sample (with masked recalls when the causal check ran)."""
        frame = pd.DataFrame([asdict(s) for s in self.samples])
        if self.masking is not None and self.masking.per_sample:
            extra = pd.DataFrame(list(self.masking.per_sample))
            frame = frame.merge(extra, on="key", how="left")
        return frame

    def summary(self) -> dict:
        """The headline numbers (run.json's "summary")."""
        out = {
            "n_samples_total": len(self.samples),
            "n_samples_counted": self.n_samples,
            "mean_recall": float(np.mean([s.recall for s in self.samples])) if self.samples else float("nan"),
            "share_above_threshold": self.share,
            "threshold": self.config.threshold,
            "top_heads": [{"layer": layer, "head": head, "score": round(score, 4)} for layer, head, score in self.top(10)],
        }
        if self.masking is not None:
            out["masking"] = self.masking.summary()
        return out


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_samples(lm, config: RetrievalConfig) -> tuple[list[NeedleSample], dict]:
    """Validate the config and build every sample of the grid (no forward pass yet).

    Returns:
        (samples, provenance): provenance names the needles, haystack and template used and
        hashes them (these decide whether finished samples of an earlier run can be reused).

    Raises:
        InterpError: any bad input (see `interp.analyses.needles.build_sample`), before any
            model work or file write happens.
    """
    arch = lm.arch
    config.validate(arch.n_layers * arch.n_heads)
    if lm.tokenizer is None:
        raise InterpError("the model has no tokenizer: retrieval scoring builds text prompts, so it needs one")
    needles = load_needles(config.needles)
    if config.haystack:
        sentences, hay_name = read_haystack(config.haystack), ", ".join(str(f) for f in config.haystack)
    else:
        sentences, hay_name = stdlib_sentences(), "Python standard-library docstrings"
    if not sentences:
        raise InterpError("the haystack is empty: give text with --haystack")

    def encode_many(texts: list[str]) -> list[list[int]]:
        return lm.tokenizer(texts, add_special_tokens=False).input_ids

    haystack = Haystack.tokenize(sentences, encode_many, hay_name)
    template = PromptTemplate.from_chat(lm.chat_prompt)  # plain prompt when there is no chat template
    samples = build_samples(
        lambda text: encode_many([text])[0],
        template,
        haystack,
        needles,
        config.lengths,
        config.depths,
        n_ctx=arch.n_ctx,
        response=config.response,
    )
    provenance = {
        "model": lm.name,
        "mode": config.mode,
        "response": config.response if config.mode == "teacher" else None,
        "max_new_tokens": config.max_new_tokens if config.mode == "decode" else None,
        "needles": config.needles or "interp/data/needles.jsonl",
        "needles_sha256": _digest([asdict(n) for n in needles]),
        "haystack": hay_name,
        "haystack_sha256": haystack.digest(),
        "haystack_tokens": haystack.n_tokens,
        "chat_template": template.chat,
    }
    return samples, provenance


def _shares_prefix(lm, config: RetrievalConfig) -> bool:
    """Whether traces and masked recalls go through the shared-prefix walk."""
    return config.share_prefix and lm.backend == "hf"


def _trace_one(lm, sample: NeedleSample, config: RetrievalConfig) -> RowTrace:
    if config.mode == "teacher":
        return teacher_trace(lm, sample, backend=config.backend)
    return decode_trace(lm, sample, max_new_tokens=config.max_new_tokens, backend=config.backend)


def _trace_all(lm, todo: Sequence[NeedleSample], config: RetrievalConfig, finish) -> None:
    """Trace every sample of ``todo``; ``finish(sample, trace)`` as each one completes."""
    if _shares_prefix(lm, config) and todo:
        done = lambda i, t: finish(todo[i], t)  # noqa: E731
        if config.mode == "teacher":
            teacher_traces(lm, todo, backend=config.backend, batch_size=config.batch_for(lm.device), on_trace=done)
        else:
            decode_traces(lm, todo, max_new_tokens=config.max_new_tokens, backend=config.backend, on_trace=done)
        return
    for sample in todo:
        finish(sample, _trace_one(lm, sample, config))


def _recall_all(lm, todo: Sequence[NeedleSample], config: RetrievalConfig, edits: Sequence, finish) -> None:
    """Needle recall of every sample of ``todo`` under ``edits``; ``finish(sample, recall, text)``."""
    if _shares_prefix(lm, config) and todo:
        done = lambda i, ids: finish(todo[i], *_answer_recall(lm, ids, todo[i]))  # noqa: E731
        if config.mode == "teacher":
            teacher_answers(lm, todo, edits=edits, batch_size=config.batch_for(lm.device), on_answer=done)
        else:
            decode_answers(lm, todo, max_new_tokens=config.max_new_tokens, edits=edits, on_answer=done)
        return
    for sample in todo:
        finish(sample, *needle_recall(lm, sample, config, edits))


def _record(lm, sample: NeedleSample, trace: RowTrace, seconds: float) -> dict:
    """samples.jsonl record of one traced sample."""
    events, scores = score_trace(trace, sample)
    recall, text = _answer_recall(lm, trace.answer_ids(), sample)
    return {
        "length": sample.length,
        "depth": sample.depth,
        "needle_id": sample.needle_id,
        "n_tokens": sample.n_prompt,
        "haystack_depth": round(sample.haystack_depth, 4),
        "recall": recall,
        "n_events": int(events.sum()),
        "answer": text,
        "seconds": round(seconds, 3),
        "scores": scores.tolist(),
    }


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="sample", leave=False)


def score_retrieval(
    lm,
    config: RetrievalConfig = RetrievalConfig(),
    out_dir: Optional[str | Path] = None,
    *,
    fresh: bool = False,
    progress: bool = True,
) -> RetrievalResult:
    """Score every head for retrieval on the needle grid, and run the causal check.

    Args:
        lm: a `interp.models.LoadedModel` with a tokenizer.
        config: what to run (`RetrievalConfig`).
        out_dir: if given, finished samples are logged there as they complete
            (``samples.jsonl``; masking runs in ``masking-<hash>.jsonl``) and a re-run with
            the same folder skips them; at the end heads.csv, samples.csv and run.json are
            written atomically.
        fresh: ignore finished samples in ``out_dir`` and start over.
        progress: show a progress bar.

    Returns:
        A `RetrievalResult`.

    Raises:
        InterpError: bad input (checked before any model work or write), or an ``out_dir``
            holding a run with other settings.
    """
    from interp.distributed import finished, map_units, open_log, world
    from interp.hooks import uniform_attention
    from interp.runs import atomic_write_csv, atomic_write_json, prepare_out_dir, run_info

    started = time.time()
    samples, provenance = prepare_samples(lm, config)
    log = mask_log = None
    progress = progress and world().main  # under torchrun/srun: one bar, rank 0's
    if out_dir is not None:
        folder = prepare_out_dir(out_dir)
        log = open_log(folder / "samples.jsonl", provenance, fresh=fresh)

    records: dict[str, dict] = {}
    t0 = time.perf_counter()
    with _progress(len(samples), f"retrieval ({config.mode})", progress) as bar:
        by_key = {s.key: s for s in samples}
        n_computed = len(samples) - len(finished(log, list(by_key)))  # by all ranks together
        last = [time.perf_counter()]

        def trace_many(keys, done) -> None:  # this rank's unfinished samples (interp.distributed)
            def finish(sample: NeedleSample, trace: RowTrace) -> None:
                now = time.perf_counter()
                done(sample.key, _record(lm, sample, trace, now - last[0]))
                last[0] = now
                bar.update(1)

            _trace_all(lm, [by_key[k] for k in keys], config, finish)

        # contiguous blocks keep samples that share a prefix on one rank
        records = map_units(list(by_key), compute_many=trace_many, log=log, what="needle samples", progress=False, contiguous=True)
        bar.update(len(samples) - bar.n)
    scoring_seconds = time.perf_counter() - t0

    arch = lm.arch
    per_sample = np.stack([np.asarray(records[s.key]["scores"], dtype=np.float64) for s in samples])
    if per_sample.shape[1:] != (arch.n_layers, arch.n_heads):
        raise InterpError(f"{log.path if log else 'the log'} holds scores of another head layout: re-run with --fresh")
    counted = [records[s.key]["recall"] >= config.min_recall for s in samples]
    scores, n_counted = aggregate(per_sample, counted)
    sample_records = tuple(
        SampleRecord(
            key=s.key,
            length=s.length,
            depth=s.depth,
            needle_id=s.needle_id,
            n_tokens=int(records[s.key]["n_tokens"]),
            haystack_depth=float(records[s.key]["haystack_depth"]),
            recall=float(records[s.key]["recall"]),
            counted=bool(c),
            n_events=int(records[s.key]["n_events"]),
            answer=str(records[s.key]["answer"]),
            seconds=float(records[s.key]["seconds"]),
        )
        for s, c in zip(samples, counted)
    )

    masking = None
    t1 = time.perf_counter()
    if config.mask and n_counted > 0:
        k_top, k_random = config.mask_sizes(arch.n_layers * arch.n_heads)
        top = tuple(top_heads(scores, k_top))
        randoms = tuple(tuple(random_heads(scores, k_random, seed, top, config.threshold)) for seed in config.seeds)
        conditions = [("top", None, top)] + [("random", seed, heads) for seed, heads in zip(config.seeds, randoms)]
        if out_dir is not None:
            mask_settings = {**provenance, "conditions": [[c, s, [list(h) for h in heads]] for c, s, heads in conditions]}
            mask_log = open_log(Path(out_dir) / f"masking-{_digest(mask_settings)}.jsonl", mask_settings, fresh=fresh)
        results: dict[tuple[str, Optional[int]], dict[str, float]] = {}
        with _progress(len(conditions) * len(samples), "masking check", progress) as bar:
            for name, seed, heads in conditions:
                edits = [uniform_attention(layer, head) for layer, head in heads]
                got = results.setdefault((name, seed), {})
                prefix = f"{name}{'' if seed is None else seed}|"

                def recall_many(keys, done, edits=edits, prefix=prefix) -> None:  # this rank's share
                    def finish(sample: NeedleSample, recall: float, text: str) -> None:
                        done(prefix + sample.key, {"recall": recall, "answer": text})
                        bar.update(1)

                    _recall_all(lm, [by_key[k[len(prefix):]] for k in keys], config, edits, finish)

                recs = map_units(
                    [prefix + s.key for s in samples], compute_many=recall_many, log=mask_log,
                    what="masked samples", progress=False, contiguous=True,
                )
                got.update({s.key: float(recs[prefix + s.key]["recall"]) for s in samples})
        per = tuple(
            {
                "key": s.key,
                "recall_top_masked": results[("top", None)][s.key],
                "recall_random_masked": float(np.mean([results[("random", seed)][s.key] for seed in config.seeds])),
            }
            for s in samples
        )
        masking = MaskingResult(
            k_top=k_top,
            k_random=k_random,
            top=top,
            random=randoms,
            seeds=tuple(config.seeds),
            recall_unmasked=float(np.mean([r.recall for r in sample_records])),
            recall_top=float(np.mean(list(results[("top", None)].values()))),
            recall_random=tuple(float(np.mean(list(results[("random", seed)].values()))) for seed in config.seeds),
            per_sample=per,
        )
    masking_seconds = time.perf_counter() - t1

    result = RetrievalResult(
        scores=scores,
        sample_scores=per_sample,
        samples=sample_records,
        n_samples=n_counted,
        masking=masking,
        config=config,
        model=lm.name,
        timings={
            "scoring_seconds": round(scoring_seconds, 2),
            "masking_seconds": round(masking_seconds, 2),
            "samples_computed": n_computed,
            "samples_resumed": len(samples) - n_computed,
        },
    )
    if out_dir is not None and world().main:  # every rank holds the merged result; rank 0 writes it
        folder = Path(out_dir)
        atomic_write_csv(folder / "heads.csv", result.to_dataframe())
        atomic_write_csv(folder / "samples.csv", result.samples_dataframe())
        info = run_info(lm, settings={**config.settings(), **provenance}, started=started)
        info["timings"] = result.timings
        info["summary"] = result.summary()
        if masking is not None:
            info["masking"] = masking.to_dataframe().to_dict(orient="records")
        elif config.mask:
            info["masking"] = "skipped: no sample counted, so there are no top heads to mask"
        atomic_write_json(folder / "run.json", info)
    return result


# --------------------------------------------------------------------------------------------
# REFERENCE PATH, for tests and benchmarks only: Wu et al.'s own way of reading j*.
# It materialises attention (eager attention, output_attentions=True) and must never be used
# by the analysis itself; it exists so tests and benchmarks/retrieval.py can check that the
# kernel rows give the same events.
# --------------------------------------------------------------------------------------------


def paper_decode_trace(
    eager_model, tokenizer, sample: NeedleSample, *, max_new_tokens: int = 50, prefill_model=None
) -> RowTrace:
    """Wu et al.'s loop on a separately loaded eager HF model (reference for tests/benchmarks).

    Prefill ``prompt[:-1]`` with a KV cache, feed the last prompt token, then greedy steps with
    ``output_attentions=True``; j* is the argmax of each head's materialised attention row
    (the paper's ``topk(1)``). Stops after a newline or end-of-sequence token, or the limit.

    Args:
        eager_model: an HF causal LM loaded with ``attn_implementation="eager"``.
        tokenizer: its tokenizer (for the newline stop rule).
        prefill_model: the model that prefills (default: ``eager_model``). Wu et al.'s code
            prefills with flash attention and materialises attention only in the decode
            steps; pass the same weights loaded with SDPA to reproduce that.
    """
    stops: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(eager_model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            stops.add(source)
        elif isinstance(source, (list, tuple)):
            stops.update(int(x) for x in source)
    ids = torch.tensor([list(sample.prompt_ids)], dtype=torch.long)
    emitted: list[int] = []
    rows: list[Tensor] = []
    stopped = False
    with torch.no_grad():
        past = (prefill_model or eager_model)(input_ids=ids[:, :-1], use_cache=True).past_key_values
        token = ids[:, -1:]
        for _ in range(max_new_tokens):
            out = eager_model(input_ids=token, past_key_values=past, use_cache=True, output_attentions=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            emitted.append(nxt)
            rows.append(torch.stack([att[0, :, -1].argmax(-1) for att in out.attentions]))  # [layer, head]
            if nxt in stops or "\n" in tokenizer.decode([nxt]):
                stopped = True
                break
            token = torch.tensor([[nxt]], dtype=torch.long)
    n_prompt = sample.n_prompt
    return RowTrace(
        positions=torch.arange(n_prompt - 1, n_prompt - 1 + len(emitted)),
        top1=torch.stack(rows, dim=-1),
        emitted=torch.tensor(emitted, dtype=torch.long),
        reference=None,
        tokens=torch.tensor(list(sample.prompt_ids) + emitted, dtype=torch.long),
        stopped=stopped,
    )

"""Retrieval heads: needle-in-a-haystack copy scores per head (Wu et al. 2024), over a grid.

Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality") score a head
by how often it *copies* the answer out of the needle while the model writes it (the copy
event and the per-sample score are in `interp.analyses.retrieval_scores`). A sample counts only
when the model's answer has ROUGE-1 recall >= 0.5 against the reference; a head's score is the
mean over counted samples; a head with score > 0.1 is a retrieval head.

The paper decodes greedily with eager attention and ``output_attentions`` (the full [T, T]
matrices) to read j*; interp does not. Here
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
  steps); the kernel computes only the decode rows.

With ``share_prefix`` (the default) both modes and the masking check walk a prefix tree of the
samples with a reused KV cache (`interp.hooks.prefix`): each shared position is
computed once, and the results are those of one pass per sample.

The causal check masks heads by making their attention uniform (`interp.hooks.uniform_attention`,
query set to zero) and re-runs the needle task: recall unmasked, with the top-K heads masked,
and with K random non-retrieval heads masked (several seeds). K defaults to 5% of all heads.

This module is pure: the frozen `RetrievalConfig`, functions over per-sample scores
(`aggregate`, `top_heads`, `random_heads`, `masking_conditions`, `combine`, `masking_result`)
and the frozen `RetrievalResult`. The runner that drives the model, resumes and writes files is
`interp.experiments.retrieval`; the samples come from `interp.datasets.needles`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from interp.analyses._config import Config
from interp.analyses.retrieval_scores import (
    RowTrace,
    copy_events,
    response_rows,
    rouge1_recall,
    sample_record,
    sample_scores,
    score_trace,
)
from interp.datasets.needles import NeedleSample
from interp.errors import InterpError

__all__ = [
    "RetrievalConfig",
    "RetrievalResult",
    "SampleRecord",
    "MaskingResult",
    "RowTrace",
    "Condition",
    "score_trace",
    "sample_record",
    "copy_events",
    "sample_scores",
    "rouge1_recall",
    "response_rows",
    "aggregate",
    "share_above",
    "top_heads",
    "random_heads",
    "default_k",
    "masking_conditions",
    "combine",
    "masking_result",
]

Head = tuple[int, int]
Condition = tuple[str, Optional[int], tuple[Head, ...]]  # (name "top"/"random", seed, heads masked)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalConfig(Config):
    """What the retrieval experiment runs.

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
            cache (`interp.hooks.prefix`; models that take a prefix cache, the HF
            backend; both modes and the masking check; same results as one pass per sample).
            False = each sample on its own.
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

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range (K against the model: `mask_sizes`)."""
        for name in ("lengths", "depths", "haystack", "seeds"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)):
                raise InterpError(f"{name} must be a sequence, got the string {value!r}")
            object.__setattr__(self, name, tuple(value))
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

    def batch_for(self, device: torch.device) -> int:
        """The batch size on ``device`` (``batch_size``, or its default there)."""
        if self.batch_size is not None:
            return self.batch_size
        return 4 if device.type == "cuda" else 1

    def mask_sizes(self, n_heads_total: int) -> tuple[int, int]:
        """(K top, K random) for a model with ``n_heads_total`` heads.

        Raises:
            InterpError: K top larger than the model's heads, or K random larger than the heads
                outside the top K (the runner checks this before any model work).
        """
        k_top = self.mask_top if self.mask_top is not None else default_k(n_heads_total)
        k_random = self.mask_random if self.mask_random is not None else k_top
        if k_top > n_heads_total:
            raise InterpError(f"--mask-top {k_top} is larger than the model's {n_heads_total} heads: use K <= {n_heads_total}")
        if k_random > n_heads_total - k_top:
            raise InterpError(
                f"--mask-random {k_random} is too large: random heads are drawn from the {n_heads_total - k_top} "
                f"heads outside the top {k_top}; use K <= {n_heads_total - k_top}"
            )
        return k_top, k_random


def default_k(n_heads_total: int, share: float = 0.05) -> int:
    """5% of all heads, rounded, at least 1 (the paper's "fewer than 5% are retrieval heads")."""
    return max(1, int(math.floor(share * n_heads_total + 0.5)))


# --------------------------------------------------------------------------------------------
# grid-level scoring
# --------------------------------------------------------------------------------------------


def aggregate(per_sample: Float[np.ndarray, "n layer head"], counted: Sequence[bool]) -> tuple[Float[np.ndarray, "layer head"], int]:
    """Mean per-head score over counted samples, and their number (scores NaN when none counts)."""
    per_sample = np.asarray(per_sample, dtype=np.float64)
    mask = np.asarray(counted, dtype=bool)
    if mask.shape[0] != per_sample.shape[0]:
        raise InterpError("counted must have one flag per sample")
    if not mask.any():
        return np.full(per_sample.shape[1:], np.nan), 0
    return per_sample[mask].mean(axis=0), int(mask.sum())


def share_above(scores: Float[np.ndarray, "layer head"], threshold: float = 0.1) -> float:
    """Share of heads with score > threshold (NaN when the scores are undefined)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).all():
        return float("nan")
    return float((scores > threshold).mean())


def top_heads(scores: Float[np.ndarray, "layer head"], k: int) -> list[Head]:
    """The k highest-scoring (layer, head), best first; ties broken by (layer, head)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).all():
        raise InterpError("no sample counted, so the scores are undefined and there are no top heads")
    flat = np.nan_to_num(scores, nan=-np.inf).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))  # by score desc, then index asc
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order[:k]]


def random_heads(scores: Float[np.ndarray, "layer head"], k: int, seed: int, exclude: Sequence[Head], threshold: float = 0.1) -> list[Head]:
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


def masking_conditions(scores: Float[np.ndarray, "layer head"], config: RetrievalConfig) -> list[Condition]:
    """The causal check's conditions: the top-K heads, then one random-K draw per seed."""
    k_top, k_random = config.mask_sizes(int(np.asarray(scores).size))
    top = tuple(top_heads(scores, k_top))
    randoms = [tuple(random_heads(scores, k_random, seed, top, config.threshold)) for seed in config.seeds]
    return [("top", None, top)] + [("random", seed, heads) for seed, heads in zip(config.seeds, randoms)]


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

    def heads_above(self, k: int = 16, score: float = 0.0) -> list[Head]:
        """(layer, head) of the k best heads that score above ``score`` (fewer when fewer do)."""
        return [(layer, head) for layer, head, value in self.top(k) if value > score]

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


def combine(
    model: str,
    config: RetrievalConfig,
    samples: Sequence[NeedleSample],
    records: Mapping[str, dict],
    shape: tuple[int, int],
    timings: Optional[dict] = None,
) -> RetrievalResult:
    """The grid's result (no causal check yet) from each sample's record (`sample_record`).

    Args:
        samples: the grid, in order; ``records`` holds one record per sample key.
        shape: (layers, heads) of the model, which every record's scores must have.

    Raises:
        InterpError: a record holding scores of another head layout (a log of another model).
    """
    per_sample = np.stack([np.asarray(records[s.key]["scores"], dtype=np.float64) for s in samples])
    if per_sample.shape[1:] != tuple(shape):
        raise InterpError(f"the log holds scores of {per_sample.shape[1:]} heads, not the model's {tuple(shape)}: re-run with --fresh")
    counted = [records[s.key]["recall"] >= config.min_recall for s in samples]
    scores, n_counted = aggregate(per_sample, counted)
    rows = tuple(
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
    return RetrievalResult(
        scores=scores, sample_scores=per_sample, samples=rows, n_samples=n_counted, masking=None,
        config=config, model=model, timings=dict(timings or {}),
    )  # fmt: skip


def masking_result(
    result: RetrievalResult, conditions: Sequence[Condition], recalls: Mapping[tuple[str, Optional[int]], Mapping[str, float]]
) -> MaskingResult:
    """The causal check from each condition's per-sample recalls.

    Args:
        result: the unmasked result (its samples' recalls are the unmasked ones).
        conditions: `masking_conditions`, the top-K first.
        recalls: (condition name, seed) -> {sample key: recall with those heads masked}.
    """
    (_, _, top), randoms = conditions[0], conditions[1:]
    seeds = tuple(seed for _, seed, _ in randoms)
    keys = [s.key for s in result.samples]
    per = tuple(
        {
            "key": key,
            "recall_top_masked": recalls[("top", None)][key],
            "recall_random_masked": float(np.mean([recalls[("random", seed)][key] for seed in seeds])),
        }
        for key in keys
    )
    return MaskingResult(
        k_top=len(top),
        k_random=len(randoms[0][2]),
        top=tuple(top),
        random=tuple(tuple(heads) for _, _, heads in randoms),
        seeds=seeds,
        recall_unmasked=float(np.mean([r.recall for r in result.samples])),
        recall_top=float(np.mean([recalls[("top", None)][key] for key in keys])),
        recall_random=tuple(float(np.mean([recalls[("random", seed)][key] for key in keys])) for seed in seeds),
        per_sample=per,
    )

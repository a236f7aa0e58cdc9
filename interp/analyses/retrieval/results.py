"""The grid's result: per-head retrieval scores over counted samples, and the causal check's record.

A head's score is the mean of its per-sample scores (`interp.analyses.retrieval.scores`) over
the counted samples (ROUGE-1 recall of the model's answer >= ``min_recall``); a head scoring
above ``threshold`` (0.1) is a retrieval head (Wu et al. 2024). `combine` builds the result from
each sample's logged record; `MaskingResult` holds the causal check (`interp.analyses.retrieval.masking`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float

from interp.analyses.checks import Check, above, as_records, at_least, not_tested
from interp.analyses.ranking import rank_heads
from interp.analyses.retrieval.config import Head, RetrievalConfig
from interp.analyses.stats import mean_spread
from interp.datasets.needles import NeedleSample
from interp.errors import InterpError

__all__ = ["RetrievalResult", "SampleRecord", "MaskingResult", "aggregate", "share_above", "top_heads", "combine"]


# --------------------------------------------------------------------------------------------
# grid-level scoring (pure, over per-sample scores)
# --------------------------------------------------------------------------------------------


def aggregate(
    per_sample: Float[np.ndarray, "n layer head"], counted: Sequence[bool]
) -> tuple[Float[np.ndarray, "layer head"], int]:
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
    return [(layer, head) for layer, head, _ in rank_heads(scores, k)]  # `interp.analyses.rank_heads`


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
    def checks(self) -> tuple[Check, ...]:
        """Whether the scores rest on enough retrievals, and the causal check separates.

        - ``counted_samples``: samples whose answer recalls the needle (ROUGE-1 recall >=
          ``min_recall``), at least ``config.min_counted``; a model that cannot recall the needle
          gives no retrieval heads to find.
        - ``masking_top_below_random`` (when the causal check ran): recall with K random heads
          masked (mean over seeds) minus recall with the top-K masked, above ``masking_sigmas``
          standard deviations of the random-K recall across seeds; not tested with one seed (no
          spread: any positive gap would pass).
        """
        recall = float(np.mean([s.recall for s in self.samples])) if self.samples else float("nan")
        out = [
            at_least(
                "counted_samples", self.n_samples, self.config.min_counted,
                f"samples of {len(self.samples)} whose answer recalls the needle (ROUGE-1 recall >= "
                f"{self.config.min_recall}; mean recall of the unmasked model {recall:.2f}); the scores average "
                "over these only",
            )
        ]  # fmt: skip
        m = self.masking
        if m is not None:
            gap = m.recall_random_mean - m.recall_top
            check = above(
                "masking_top_below_random", gap, self.config.masking_sigmas * m.recall_random_std,
                f"recall with {m.k_random} random heads masked ({m.recall_random_mean:.2f}, mean of {len(m.seeds)} "
                f"seeds) minus recall with the top {m.k_top} masked ({m.recall_top:.2f}), against "
                f"{self.config.masking_sigmas:g} x the seeds' standard deviation ({m.recall_random_std:.3f})",
            )  # fmt: skip
            if len(m.seeds) < 2:  # one draw has no spread: "above 2 x 0" would pass by construction
                check = not_tested(
                    check,
                    f"{len(m.seeds)} seed: no spread of random-K recall to compare with; give --seed twice or more",
                )
            out.append(check)
        return tuple(out)

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
        """heads.csv: layer, head, score, its spread over the counted samples (``score_sd``,
        ``score_ci_low``, ``score_ci_high``: Student-t's 95% interval of the mean; NaN below two
        counted samples), n_samples, retrieval (score > threshold), rank."""
        n_layers, n_heads = self.scores.shape
        counted = np.asarray([s.counted for s in self.samples], dtype=bool)
        spread = mean_spread(np.asarray(self.sample_scores, dtype=np.float64)[counted].reshape(-1, n_layers * n_heads))
        layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
        flat = self.scores.ravel()
        rank = np.full(flat.size, -1)
        if self.n_samples:
            ranked = [lh[0] * n_heads + lh[1] for lh in top_heads(self.scores, flat.size)]
            rank[ranked] = np.arange(1, len(ranked) + 1)
        return pd.DataFrame(
            {
                "layer": layer,
                "head": head,
                "score": flat,
                **{f"score_{key}": spread[key] for key in ("sd", "ci_low", "ci_high")},
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
            "top_heads": [
                {"layer": layer, "head": head, "score": round(score, 4)} for layer, head, score in self.top(10)
            ],
        }
        if self.masking is not None:
            out["masking"] = self.masking.summary()
        out["checks"] = as_records(self.checks)
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
        raise InterpError(
            f"the log holds scores of {per_sample.shape[1:]} heads, not the model's {tuple(shape)}: re-run with --fresh"
        )
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

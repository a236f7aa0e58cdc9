"""Query-focused retrieval heads (QRHead, Zhang et al., EMNLP 2025).

A prompt lists documents and then a query. For a head, the query-focused retrieval score of
document c is the attention mass from the query span to the document span,

    m_c = (1 / |Q|) sum_{i in Q} sum_{j in doc c} A_ij,

i.e. the segment statistic seg_i(c) of `interp.kernels` averaged over the query rows Q. QRHead
calibrates it by subtracting the same score for a null query ("N/A" in place of the query,
same documents at the same positions): s_c = m_c - m_c^null, which removes the head's
query-independent preference for some positions. On a detection set where one document is
gold, a head's QR score is the mean over samples of s_gold; `accuracy` is how often
argmax_c s_c is the gold document. The top heads by QR score are the query-focused retrieval
heads (the paper sums their s_c to rank documents).

The paper's m_c sums over the query tokens (it scores documents, so the constant 1/|Q| does
not matter); the mean keeps scores of queries of different lengths comparable.

The samples and their prompts are `interp.datasets.documents` (the shipped detection set
`interp/data/qr_detection.jsonl` or a JSONL file); the runner is `interp.experiments.qr_heads`.
This module is pure: `qr_scores`, `sample_scores`, `combine`, the frozen `QRConfig` and `QRResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.analyses.checks import Check, above, as_records, chance_level, not_tested
from interp.analyses.ranking import grid_cells, rank_heads
from interp.analyses.stats import mean_spread, proportion_spread, spread_columns
from interp.config import Config
from interp.datasets.documents import QRSample
from interp.errors import InterpError

__all__ = ["NULL_QUERY", "QRConfig", "QRResult", "qr_scores", "sample_scores", "combine"]

NULL_QUERY = "N/A"  # QRHead's null query


@dataclass(frozen=True)
class QRConfig(Config):
    """What the QRHead experiment scores.

    Attributes:
        samples: detection samples; None = the shipped set.
        max_samples: only the first this many; None = all.
        calibrate: subtract the null-query score (QRHead); False = raw m_c.
        top: best heads listed in the summary (run.json).
        layers: layers to score; None = all.
        backend: `interp.kernels.attention_stats` backend.
        chance_quantile: check: the most accurate head must exceed this quantile of the best
            accuracy that as many heads guessing a document at random reach.
    """

    samples: Optional[tuple[QRSample, ...]] = None  # None: shipped qr_detection.jsonl
    max_samples: Optional[int] = None  # None: every sample
    calibrate: bool = True  # QRHead's null-query calibration
    top: int = 5  # heads in the summary
    layers: Optional[tuple[int, ...]] = None  # None: all layers
    backend: str = "auto"  # kernel backend
    chance_quantile: float = (
        0.95  # check: best head above the 95th percentile of the best guessing head (no paper value)
    )

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        if self.layers is not None:
            self.normalise(layers=tuple(self.layers))
        if not 0.0 < self.chance_quantile < 1.0:
            raise InterpError(f"chance_quantile must lie in (0, 1), got {self.chance_quantile!r}")
        if self.samples is not None:
            self.normalise(samples=tuple(self.samples))
            if not self.samples:
                raise InterpError("no samples given: pass at least one, or samples=None for the shipped detection set")
        if self.max_samples is not None and not (isinstance(self.max_samples, int) and self.max_samples >= 1):
            raise InterpError(f"max_samples must be None or an int >= 1, got {self.max_samples!r}")
        if not (isinstance(self.top, int) and self.top >= 1):
            raise InterpError(f"top must be an int >= 1, got {self.top!r}")

    def settings(self) -> dict:
        """JSON-friendly settings (samples summarised by count)."""
        out = super().settings()
        s = out.pop("samples")
        out["samples"] = "shipped qr_detection.jsonl" if s is None else f"{len(s)} samples"
        return out


def qr_scores(seg_mass: Float[Tensor, "head row doc"]) -> Float[Tensor, "head doc"]:
    """Mean over query rows of the mass on each document.

    Args:
        seg_mass: [head, n_rows, n_docs] seg_i(c) of the query rows.

    Returns:
        [head, n_docs] m_c.
    """
    return seg_mass.mean(1)


def sample_scores(
    mass: Float[Tensor, "*heads doc"], null_mass: Optional[Float[Tensor, "*heads doc"]], gold: int
) -> tuple[Float[Tensor, "*heads"], Bool[Tensor, "*heads"], Float[Tensor, "*heads"]]:
    """One sample's scores per head.

    Args:
        mass: m_c of the query.
        null_mass: m_c of the null query (calibration), or None for raw scores.
        gold: index of the answering document.

    Returns:
        (s_gold = m_gold - m_gold^null, argmax_c s_c == gold, raw m_gold).
    """
    calibrated = mass if null_mass is None else mass - null_mass
    return calibrated[..., gold], calibrated.argmax(-1) == gold, mass[..., gold]


@dataclass(frozen=True)
class QRResult:
    """QR scores of every head.

    Attributes:
        gold_score: [sample, layer index, head] s_gold (calibrated unless config.calibrate=False).
        correct: [sample, layer index, head] argmax_c s_c == gold.
        raw_gold: [sample, layer index, head] m_gold before calibration.
        n_docs: documents of each sample (the chance of guessing the gold one is 1 / n_docs).
    """

    config: QRConfig
    model: str
    layers: tuple[int, ...]
    n_heads: int
    sample_ids: tuple[str, ...]
    gold_score: np.ndarray
    correct: np.ndarray
    raw_gold: np.ndarray
    n_docs: tuple[int, ...] = ()

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def scores(self) -> np.ndarray:
        """[layer index, head] QR score: mean of s_gold over samples."""
        return self.gold_score.mean(0)

    @property
    def accuracy(self) -> np.ndarray:
        """[layer index, head] share of samples where the head's argmax is the gold document."""
        return self.correct.mean(0)

    @property
    def checks(self) -> tuple[Check, ...]:
        """The most accurate head against the best accuracy as many heads reach by guessing.

        A head's accuracy is how often its argmax_c s_c is the gold document; guessing, it is right
        with chance 1 / n_docs per sample. The threshold is the ``config.chance_quantile`` quantile
        of the best of ``n_heads`` guessing heads (`chance_level`).
        """
        n = self.correct[0].size
        chance = [1 / d for d in self.n_docs] if len(self.n_docs) == self.n_samples else []
        best = float(self.accuracy.max()) if self.n_samples else float("nan")
        level = chance_level(chance, n, self.config.chance_quantile) if chance else float("nan")
        mean_chance = float(np.mean(chance)) if chance else float("nan")
        check = above(
            "best_head_above_chance", best, level,
            f"accuracy of the most accurate of {n} heads at picking the gold document of {self.n_samples} samples "
            f"(chance {mean_chance:.2f} per sample) against the {self.config.chance_quantile:.0%} quantile of the "
            f"best of {n} heads guessing at random",
        )  # fmt: skip
        if not level < 1:  # no sample, or so few that even a head right on all of them cannot beat guessing
            check = not_tested(check, f"{self.n_samples} sample(s): too few to beat guessing; add samples")
        return (check,)

    def top(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The n heads with the highest QR score: [(layer, head, score)] (`rank_heads`)."""
        return rank_heads(self.scores, n, layers=self.layers)

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: layer, head, qr_score, accuracy, raw_gold_mass, each followed by its spread
        over samples (``_sd``, ``_ci_low``, ``_ci_high``: Student-t's 95% interval of the mean,
        Wilson's for the accuracy; NaN with one sample)."""
        cells = grid_cells(len(self.layers), self.n_heads)
        return pd.DataFrame(
            {
                "layer": np.asarray(self.layers)[cells[0]],
                "head": cells[1],
                "qr_score": self.scores[cells],
                **spread_columns("qr_score", mean_spread(self.gold_score), cells),
                "accuracy": self.accuracy[cells],
                **spread_columns("accuracy", proportion_spread(self.correct), cells),
                "raw_gold_mass": self.raw_gold.mean(0)[cells],
                **spread_columns("raw_gold_mass", mean_spread(self.raw_gold), cells),
            }
        )

    def summary(self, n: Optional[int] = None) -> dict:
        """Headline numbers; the best ``n`` heads (default ``config.top``) with their accuracy."""
        n = self.config.top if n is None else n
        acc = self.accuracy
        best = np.unravel_index(np.argmax(acc), acc.shape)
        idx = {layer: i for i, layer in enumerate(self.layers)}
        return {
            "n_samples": self.n_samples,
            "top": [
                [l, h, round(v, 4), float(acc[idx[l], h])] for l, h, v in self.top(n)
            ],  # layer, head, score, accuracy
            "best_accuracy_head": [self.layers[best[0]], int(best[1]), float(acc[best])],
            "checks": as_records(self.checks),
        }


def combine(
    config: QRConfig,
    model: str,
    layers: Sequence[int],
    n_heads: int,
    samples: Sequence[QRSample],
    records: Sequence[Mapping],
) -> QRResult:
    """Per-sample document masses -> per-head QR scores.

    Args:
        samples: the scored samples.
        records: per sample, in order, ``{"mass": [layer index][head][doc] m_c, "null": the
            same for the null query, or None without calibration}``.
    """
    shape = (len(samples), len(layers), n_heads)
    gold, correct, raw = np.zeros(shape), np.zeros(shape, bool), np.zeros(shape)
    for si, (s, rec) in enumerate(zip(samples, records)):
        m = torch.tensor(rec["mass"], dtype=torch.float64)
        m0 = None if rec.get("null") is None else torch.tensor(rec["null"], dtype=torch.float64)
        g, ok, r = sample_scores(m, m0, s.gold)
        gold[si], correct[si], raw[si] = g.numpy(), ok.numpy(), r.numpy()
    return QRResult(
        config, model, tuple(layers), n_heads, tuple(s.id for s in samples), gold, correct, raw,
        tuple(len(s.documents) for s in samples),
    )  # fmt: skip

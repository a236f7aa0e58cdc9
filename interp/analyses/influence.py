"""AttentionInfluence (arXiv 2505.07293): rank texts by how much they need retrieval heads.

For each text, the language-modelling loss L_base (mean next-token cross-entropy over the
text's tokens) is compared with L_masked, the same loss with the top retrieval heads made
uniform (each head attends uniformly over its visible keys: `interp.hooks.uniform_attention`,
the masking of Wu et al. 2024):

    AI = (L_masked - L_base) / L_base.

A text with a high AI is one whose prediction relies on those heads (in the paper: reasoning-
and retrieval-heavy text, selected for pre-training). The heads come from a retrieval run's
heads.csv (`interp.datasets.head_lists.read_heads`): the top ``k`` by score (default 5% of all
heads, the size of the repository's causal masking check), or an explicit list.

This module is pure: `influence`, `text_loss`, `text_label`, `heads_to_mask`, the frozen
`InfluenceConfig` and `InfluenceResult`. The runner (two forward passes per text) is
`interp.experiments.influence`; no attention statistic is needed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.checks import Check, above, as_records, holds, not_tested
from interp.config import Config
from interp.errors import InterpError

__all__ = ["InfluenceConfig", "InfluenceResult", "influence", "text_loss", "text_label", "heads_to_mask", "combine"]


@dataclass(frozen=True)
class InfluenceConfig(Config):
    """Which heads AttentionInfluence makes uniform, on which texts.

    Attributes:
        heads: (layer, head) pairs, best first (an explicit list, or a retrieval run's heads
            ranked by score); None = head 0 of the middle layer.
        k: make the first ``k`` of ``heads`` uniform; None = all of them (or ``share``).
        share: with ``k`` None, make the first round(share x the model's heads) uniform (at
            least one; 0.05 is the default for a heads.csv); None = all of ``heads``.
        texts: the texts to rank; None = the shipped set (`interp.datasets.texts`).
        max_texts: rank only the first this many texts; None = all.
        max_tokens: tokens of each text scored (its first); None = all.
        heads_name: what the heads are, for the finding's sentence ("top retrieval heads").
        heads_checked: whether the run the heads come from passed its own checks (a retrieval
            run's run.json, the report's retrieval stage); None: not known (an explicit list).
    """

    heads: Optional[tuple[tuple[int, int], ...]] = None  # None: head 0 of the middle layer
    k: Optional[int] = None  # None: all heads (or `share`)
    share: Optional[float] = None  # share of the model's heads, when k is None
    texts: Optional[tuple[str, ...]] = None  # None: the shipped sink_texts.txt
    max_texts: Optional[int] = None  # None: every text
    max_tokens: Optional[int] = 512  # tokens per text
    heads_name: str = "given heads"  # for the finding's sentence
    heads_checked: Optional[bool] = None  # the heads' source run passed its checks; None: unknown

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        if self.heads is not None:
            heads = tuple((int(l), int(h)) for l, h in self.heads)
            self.normalise(heads=heads)
            if not heads:
                raise InterpError("no heads to mask: pass at least one (layer, head), or heads=None")
        if isinstance(self.texts, str):
            raise InterpError("texts must be a sequence of strings: wrap a single text as (text,)")
        if self.texts is not None:
            self.normalise(texts=tuple(self.texts))
            if not self.texts:
                raise InterpError("no texts given: pass at least one text to rank")
            for n, text in enumerate(self.texts):
                if not isinstance(text, str) or not text.strip():
                    raise InterpError(f"text {n + 1} is empty: remove it or give it some words")
        if self.k is not None and not (isinstance(self.k, int) and self.k >= 1):
            raise InterpError(f"k (heads to mask) must be an int >= 1, got {self.k!r}")
        if self.share is not None and not 0.0 < self.share <= 1.0:
            raise InterpError(f"share (of the model's heads to mask) must lie in (0, 1], got {self.share!r}")
        if self.max_texts is not None and not (isinstance(self.max_texts, int) and self.max_texts >= 1):
            raise InterpError(f"max_texts must be None or an int >= 1, got {self.max_texts!r}")
        if self.max_tokens is not None and not (isinstance(self.max_tokens, int) and self.max_tokens >= 2):
            raise InterpError(
                f"max_tokens must be None or an int >= 2 (the loss needs 2 tokens), got {self.max_tokens!r}"
            )

    def settings(self) -> dict:
        """JSON-friendly settings (heads as "LAYER.HEAD", texts summarised)."""
        out = super().settings()
        out["heads"] = None if self.heads is None else [f"{l}.{h}" for l, h in self.heads]
        texts = out.pop("texts")
        out["texts"] = (
            "shipped sink_texts.txt" if texts is None else f"{len(texts)} texts, {sum(map(len, texts))} chars"
        )
        return out


def heads_to_mask(config: InfluenceConfig, n_layers: int, n_heads: int) -> tuple[tuple[int, int], ...]:
    """The heads the config makes uniform on a model of ``n_layers`` x ``n_heads`` heads."""
    if config.heads is None:
        return ((n_layers // 2, 0),)
    if config.k is not None:
        return config.heads[: config.k]
    if config.share is not None:
        return config.heads[: max(1, round(config.share * n_layers * n_heads))]
    return config.heads


def influence(base: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """AI = (L_masked - L_base) / L_base, elementwise."""
    return (np.asarray(masked, dtype=float) - base) / np.asarray(base, dtype=float)


def text_loss(logits: Float[Tensor, "1 pos vocab"], ids: Int[Tensor, "1 pos"]) -> float:
    """Mean next-token cross-entropy (nats) of ids [1, T] under logits [1, T, vocab]."""
    return float(torch.nn.functional.cross_entropy(logits[0, :-1].double(), ids[0, 1:].to(logits.device)))


def text_label(text: str, width: int = 60) -> str:
    """A text's label in tables: its words on one line, cut to ``width`` characters."""
    return " ".join(text.split())[:width]


@dataclass(frozen=True)
class InfluenceResult:
    """Per text: base loss, masked loss, AI (arrays [text]); the masked heads."""

    config: InfluenceConfig
    model: str
    heads: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]
    n_tokens: np.ndarray
    base_loss: np.ndarray
    masked_loss: np.ndarray

    @property
    def influence(self) -> np.ndarray:
        return influence(self.base_loss, self.masked_loss)

    @property
    def checks(self) -> tuple[Check, ...]:
        """Masking the heads must raise the loss on average (AI > 0), and the heads must come from a
        run that passed its own checks (when that is known: ``config.heads_checked``).

        Heads whose uniform attention lowers the loss are not heads the texts rely on; AI then
        ranks noise. Heads from a retrieval run that failed its checks are not retrieval heads.
        """
        ai = self.influence
        raises = above(
            "masking_raises_loss", float(ai.mean()) if ai.size else float("nan"), 0.0,
            f"mean AI over {ai.size} texts with {len(self.heads)} {self.config.heads_name} made uniform; at or "
            "below 0 masking them does not hurt the model, so they are not heads these texts rely on",
        )  # fmt: skip
        out = [raises if ai.size else not_tested(raises, "no text was scored: give texts with at least two tokens")]
        if self.config.heads_checked is not None:
            out.append(
                holds(
                    "heads_from_checked_run", self.config.heads_checked,
                    f"the {self.config.heads_name} come from a run whose own checks passed; otherwise they need not be "
                    "retrieval heads at all",
                )
            )  # fmt: skip
        return tuple(out)

    def to_dataframe(self) -> pd.DataFrame:
        """texts.csv, ranked by AI: rank, text, label, n_tokens, base_loss, masked_loss, influence."""
        df = pd.DataFrame(
            {
                "text": np.arange(len(self.labels)),
                "label": self.labels,
                "n_tokens": self.n_tokens,
                "base_loss": self.base_loss,
                "masked_loss": self.masked_loss,
                "influence": self.influence,
            }
        ).sort_values("influence", ascending=False, kind="stable")
        df.insert(0, "rank", np.arange(1, len(df) + 1))
        return df.reset_index(drop=True)

    def summary(self) -> dict:
        """Headline numbers: the masked heads and the range of AI over the texts."""
        ai = self.influence
        return {
            "n_texts": len(self.labels),
            "heads": [f"{l}.{h}" for l, h in self.heads],
            "mean_influence": float(ai.mean()),
            "max_influence": float(ai.max()),
            "min_influence": float(ai.min()),
            "top_text": self.labels[int(np.argmax(ai))],
            "checks": as_records(self.checks),
        }


def combine(
    config: InfluenceConfig,
    model: str,
    heads: Sequence[tuple[int, int]],
    texts: Sequence[str],
    records: Sequence[Mapping],
) -> InfluenceResult:
    """Per-text records ``{"n_tokens", "base_loss", "masked_loss"}`` (in text order) -> `InfluenceResult`."""
    return InfluenceResult(
        config, model, tuple(heads), tuple(text_label(t) for t in texts),
        np.array([r["n_tokens"] for r in records]), np.array([r["base_loss"] for r in records]),
        np.array([r["masked_loss"] for r in records]),
    )  # fmt: skip

"""AttentionInfluence (arXiv 2505.07293): rank texts by how much they need retrieval heads.

For each text, the language-modelling loss L_base (mean next-token cross-entropy over the
text's tokens) is compared with L_masked, the same loss with the top retrieval heads made
uniform (each head attends uniformly over its visible keys: `interp.hooks.uniform_attention`,
the masking of Wu et al. 2024):

    AI = (L_masked - L_base) / L_base.

A text with a high AI is one whose prediction relies on those heads (in the paper: reasoning-
and retrieval-heavy text, selected for pre-training). The heads come from a retrieval run's
heads.csv (`interp score retrieval`): the top ``k`` by score (default 5% of all heads, the
size of the repository's causal masking check), or an explicit list.

`attention_influence` is the driver; `read_heads` and `influence` are pure. No attention
statistic is needed here: the measurement is two forward passes per text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError

__all__ = ["InfluenceResult", "read_heads", "influence", "text_loss", "losses", "attention_influence"]


def read_heads(path: str | Path, k: int) -> tuple[tuple[int, int], ...]:
    """The top ``k`` heads (layer, head) by ``score`` of a retrieval run's heads.csv.

    Raises:
        InterpError: a missing file, missing columns, or k < 1.
    """
    p = Path(path)
    if not p.is_file():
        raise InterpError(f"heads file {p} not found: pass the heads.csv of a retrieval run (interp score retrieval --out DIR)")
    if not (isinstance(k, int) and k >= 1):
        raise InterpError(f"k (heads to mask) must be an int >= 1, got {k!r}")
    try:
        df = pd.read_csv(p)
    except Exception as err:  # pandas raises several types for bad CSV
        raise InterpError(f"cannot read {p} as CSV ({err}): pass a retrieval run's heads.csv") from err
    missing = {"layer", "head", "score"} - set(df.columns)
    if missing:
        raise InterpError(f"{p} lacks columns {sorted(missing)}: pass a retrieval run's heads.csv (layer, head, score)")
    df = df.sort_values("score", ascending=False, kind="stable").head(k)
    return tuple((int(l), int(h)) for l, h in zip(df["layer"], df["head"]))


def influence(base: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """AI = (L_masked - L_base) / L_base, elementwise."""
    return (np.asarray(masked, dtype=float) - base) / np.asarray(base, dtype=float)


def text_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) of ids [1, T] under logits [1, T, vocab]."""
    return float(torch.nn.functional.cross_entropy(logits[0, :-1].double(), ids[0, 1:].to(logits.device)))


@dataclass(frozen=True)
class InfluenceResult:
    """Per text: base loss, masked loss, AI (arrays [text]); the masked heads."""

    model: str
    heads: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]
    n_tokens: np.ndarray
    base_loss: np.ndarray
    masked_loss: np.ndarray

    @property
    def influence(self) -> np.ndarray:
        return influence(self.base_loss, self.masked_loss)

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
        ai = self.influence
        return {
            "n_texts": len(self.labels),
            "heads": [f"{l}.{h}" for l, h in self.heads],
            "mean_influence": float(ai.mean()),
            "max_influence": float(ai.max()),
            "min_influence": float(ai.min()),
            "top_text": self.labels[int(np.argmax(ai))],
        }


def attention_influence(
    lm, texts: Sequence[str], heads: Sequence[tuple[int, int]], *, max_tokens: Optional[int] = 512
) -> InfluenceResult:
    """AttentionInfluence of each text with ``heads`` made uniform.

    Args:
        lm: a `interp.models.LoadedModel`.
        texts: the texts to rank (each at least 2 tokens; cut to ``max_tokens``).
        heads: (layer, head) pairs to make uniform.
        max_tokens: analyse the first this many tokens of each text (None: all).

    Raises:
        InterpError: no texts, an empty text, no heads, a head out of range.
    """
    if not texts:
        raise InterpError("no texts given: pass at least one text to rank")
    if not heads:
        raise InterpError("no heads to mask: pass at least one (layer, head)")
    a = lm.arch
    for layer, head in heads:
        if not (0 <= layer < a.n_layers and 0 <= head < a.n_heads):
            raise InterpError(
                f"head {layer}.{head} out of range: {lm.name} has {a.n_layers} layers (0-{a.n_layers - 1}) and "
                f"{a.n_heads} heads per layer (0-{a.n_heads - 1}); was heads.csv written for another model?"
            )
    ids_list, labels = [], []
    for n, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InterpError(f"text {n + 1} is empty: remove it or give it some words")
        ids = lm.encode(text, check=False)
        ids = ids[:, :max_tokens] if max_tokens else ids
        if ids.shape[1] < 2:
            raise InterpError(f"text {n + 1} has {ids.shape[1]} token: the loss needs at least 2 tokens")
        ids_list.append(ids)
        labels.append(" ".join(text.split())[:60])
    base, masked = losses(lm, ids_list, heads)
    n_tok = np.array([ids.shape[1] for ids in ids_list])
    return InfluenceResult(lm.name, tuple(heads), tuple(labels), n_tok, base, masked)


def losses(lm, ids_list: Sequence[torch.Tensor], heads: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(L_base, L_masked) per token sequence [1, T]: two forward passes each."""
    from interp.hooks import intervene, uniform_attention

    edits = [uniform_attention(layer, head) for layer, head in heads]
    base, masked = [], []
    for ids in ids_list:
        lm.check_length(ids.shape[1])
        base.append(text_loss(lm.forward(ids), ids))
        with intervene(lm, edits):
            masked.append(text_loss(lm.forward(ids), ids))
    return np.array(base), np.array(masked)

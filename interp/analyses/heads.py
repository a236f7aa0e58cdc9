"""Classic head detectors: previous-token, duplicate-token and induction heads.

The scores TransformerLens users know from `head_detector`: for each query i an *expected key*
set E_i is read off the tokens, and a head's score is the attention mass it puts there,
sum_{j in E_i} A_ij, averaged over the query rows that have an expected key:

- previous-token: E_i = {i - 1};
- duplicate-token: E_i = the earlier positions j < i holding the same token as i;
- induction: E_i = {j + 1 : j < i, token j = token i}, the token after each earlier occurrence
  of the current token (Olsson et al. 2022).

Duplicate and induction sets keep the ``max_targets`` most recent occurrences (8 by default;
on repeated random tokens there is exactly one). The mass on each expected key is the kernel's
target-key statistic (`attention_stats(..., targets=...)`, A_{i, target}), so no [T, T]
attention matrix is built. TransformerLens divides by all query rows instead (rows with no
expected key count as 0); `HeadResult.to_dataframe` gives ``n_rows`` so either convention can
be recovered, and ``exclude_current`` follows TL's default of not counting j = i.

Two sources: repeated random tokens (the standard induction probe: ``n_seqs`` sequences of
``length`` distinct random tokens said twice, after one fixed first token, so sink heads have
their usual sink), and the user's own texts.

`score_heads` is the thin driver: one forward pass per batch, statistics streamed per layer.
The pure functions (`expected_keys`, `repeated_random_tokens`, `row_scores`) are what the
unit tests check on synthetic input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.errors import InterpError

__all__ = [
    "KINDS",
    "HeadConfig",
    "HeadResult",
    "expected_keys",
    "repeated_random_tokens",
    "row_scores",
    "parse_kinds",
    "score_heads",
]

KINDS = ("previous", "duplicate", "induction")


@dataclass(frozen=True)
class HeadConfig:
    """What `score_heads` measures.

    Attributes:
        kinds: detectors to run, a subset of `KINDS`.
        random: score on repeated random tokens.
        n_seqs: random sequences (one forward pass, batched).
        length: random tokens per copy; each sequence is 1 + 2 * length tokens.
        seed: seed of the random tokens.
        texts: the user's texts (scored one by one), or None.
        max_targets: most recent occurrences kept per row for duplicate / induction.
        exclude_current: drop j = i from the expected keys (TransformerLens's default).
        layers: layers to score; None = all.
        backend: `interp.kernels.attention_stats` backend.
    """

    kinds: tuple[str, ...] = KINDS
    random: bool = True  # repeated random tokens
    n_seqs: int = 8  # random sequences
    length: int = 64  # tokens per copy
    seed: int = 0
    texts: Optional[tuple[str, ...]] = None  # the user's texts
    max_targets: int = 8  # occurrences kept per row
    exclude_current: bool = True  # TransformerLens's default
    layers: Optional[tuple[int, ...]] = None  # None: all layers
    backend: str = "auto"

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        parse_kinds(self.kinds)
        if isinstance(self.texts, str):
            raise InterpError("texts must be a sequence of strings: wrap a single text as (text,)")
        if self.texts is not None and (not self.texts or not all(t.strip() for t in self.texts)):
            raise InterpError("texts is empty or holds an empty text: give at least one non-blank text, or texts=None")
        if not self.random and self.texts is None:
            raise InterpError("nothing to score: keep random=True or give texts")
        for name in ("n_seqs", "length", "max_targets"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise InterpError(f"{name} must be an int >= 1, got {v!r}")

    def settings(self) -> dict:
        out = asdict(self)
        texts = out.pop("texts")
        out["texts"] = None if texts is None else f"{len(texts)} texts, {sum(map(len, texts))} chars"
        return out


def parse_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """'induction,previous' (or a sequence) -> ('previous', 'induction') in `KINDS` order."""
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    bad = [k for k in items if k not in KINDS]
    if bad or not items:
        raise InterpError(f"unknown head kind(s) {bad or '(none given)'}: choose from {', '.join(KINDS)}, e.g. induction,previous")
    return tuple(k for k in KINDS if k in items)


def expected_keys(ids: Sequence[int] | Tensor, kind: str, max_targets: int = 8, exclude_current: bool = True) -> Tensor:
    """Expected key indices per query for one detector.

    Args:
        ids: [pos] token ids of one sequence.
        kind: "previous", "duplicate" or "induction".
        max_targets: occurrences kept (the most recent first) for duplicate / induction.
        exclude_current: drop j = i (an induction target equals i when token i - 1 = token i).

    Returns:
        [pos, n] int64, -1 = no expected key (n = 1 for previous, max_targets otherwise).
    """
    ids = torch.as_tensor(ids).tolist()
    n = len(ids)
    if kind == "previous":
        return (torch.arange(n) - 1)[:, None]
    if kind not in ("duplicate", "induction"):
        raise InterpError(f"unknown head kind {kind!r}: choose from {', '.join(KINDS)}")
    out = torch.full((n, max_targets), -1, dtype=torch.int64)
    seen: dict[int, list[int]] = {}
    shift = 1 if kind == "induction" else 0
    for i, tok in enumerate(ids):
        earlier = seen.setdefault(tok, [])
        cand = [j + shift for j in reversed(earlier) if not (exclude_current and j + shift == i)][:max_targets]
        out[i, : len(cand)] = torch.tensor(cand, dtype=torch.int64)
        earlier.append(i)
    return out


def repeated_random_tokens(n_seqs: int, length: int, vocab: int, seed: int = 0, first: int | None = None, avoid: Sequence[int] = ()) -> Tensor:
    """[n_seqs, 1 + 2 * length] sequences: a fixed first token, then `length` distinct random tokens twice.

    Args:
        vocab: tokens are drawn from 0..vocab-1, except `avoid` (special tokens).
        first: the first token (BOS where the tokenizer has one); None = a random token.
    """
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[[a for a in avoid if 0 <= a < vocab]] = False
    pool = allowed.nonzero()[:, 0]
    if pool.numel() < length + 1:
        raise InterpError(f"length={length} needs more distinct tokens than the vocabulary's {pool.numel()}: lower it")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_seqs):
        pick = pool[torch.randperm(pool.numel(), generator=gen)[: length + 1]]
        head = pick[:1] if first is None else torch.tensor([first])
        rows.append(torch.cat([head, pick[1:], pick[1:]]))
    return torch.stack(rows)


def row_scores(mass: Tensor) -> Tensor:
    """Per-row detector score: the summed mass over a row's expected keys.

    Args:
        mass: [..., n_targets] A_{i, t} with NaN where the target slot is empty.

    Returns:
        [...] sum over the filled slots; NaN where the row has no expected key.
    """
    has = ~mass.isnan()
    return torch.where(has.any(-1), mass.nan_to_num(0.0).sum(-1), torch.full_like(mass[..., 0], float("nan")))


@dataclass(frozen=True)
class HeadResult:
    """Detector scores of every head.

    Attributes:
        config: the settings used.
        model: model name.
        layers: the scored layers.
        n_heads: query heads per layer.
        sources: "random" and/or "text".
        kinds: the detectors.
        scores: [source, kind, layer index, head] mean mass on the expected keys.
        n_rows: [source, kind] query rows averaged over (rows with an expected key).
    """

    config: HeadConfig
    model: str
    layers: tuple[int, ...]
    n_heads: int
    sources: tuple[str, ...]
    kinds: tuple[str, ...]
    scores: np.ndarray
    n_rows: np.ndarray

    def grid(self, kind: str, source: str | None = None) -> np.ndarray:
        """[layer index, head] scores of one detector (default source: the first)."""
        s = self.sources.index(source or self.sources[0])
        return self.scores[s, self.kinds.index(kind)]

    def top(self, kind: str, n: int = 5, source: str | None = None) -> list[tuple[int, int, float]]:
        """The n highest-scoring heads of a detector: [(layer, head, score)]."""
        g = self.grid(kind, source)
        order = np.argsort(-np.nan_to_num(g, nan=-np.inf), axis=None)[:n]
        return [(self.layers[i // self.n_heads], int(i % self.n_heads), float(g.flat[i])) for i in order]

    def to_dataframe(self) -> pd.DataFrame:
        """Long format (heads.csv): source, kind, layer, head, score, n_rows."""
        rows = []
        for s, source in enumerate(self.sources):
            for k, kind in enumerate(self.kinds):
                for li, layer in enumerate(self.layers):
                    for h in range(self.n_heads):
                        rows.append((source, kind, layer, h, float(self.scores[s, k, li, h]), int(self.n_rows[s, k])))
        return pd.DataFrame(rows, columns=["source", "kind", "layer", "head", "score", "n_rows"])

    def summary(self, n: int = 5) -> dict:
        return {
            "model": self.model,
            "sources": list(self.sources),
            "top": {
                f"{source}/{kind}": [[l, h, round(v, 4)] for l, h, v in self.top(kind, n, source)]
                for source in self.sources
                for kind in self.kinds
            },
            "n_rows": {f"{s}/{k}": int(self.n_rows[i, j]) for i, s in enumerate(self.sources) for j, k in enumerate(self.kinds)},
        }


def _vocab_size(lm) -> int:
    if getattr(lm, "tokenizer", None) is not None:
        return len(lm.tokenizer)
    return lm.vocab_size


def _score_batch(lm, ids: Tensor, config: HeadConfig, layers: Sequence[int], sums: np.ndarray, counts: np.ndarray, src: int) -> None:
    """Add one batch's per-head sums of row scores (and row counts) into sums[src], counts[src]."""
    from interp.analyses._streaming import stream_layers
    from interp.kernels import attention_stats

    per_kind = [
        torch.stack([expected_keys(row, kind, config.max_targets, config.exclude_current) for row in ids.cpu()])
        for kind in config.kinds
    ]  # each [batch, pos, n]
    widths = [t.shape[-1] for t in per_kind]
    targets = torch.cat(per_kind, -1).to(lm.device)
    index = {layer: i for i, layer in enumerate(layers)}
    for k, t in enumerate(per_kind):
        counts[src, k] += int((t >= 0).any(-1).sum())

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        st = attention_stats(q, k, **lm.attention_kwargs(layer), columns=False, targets=targets, backend=config.backend)
        start = 0
        for kk, width in enumerate(widths):
            r = row_scores(st.target[..., start : start + width].double().cpu())  # [batch, head, pos]
            sums[src, kk, index[layer]] += r.nan_to_num(0.0).sum((0, 2)).numpy()
            start += width

    stream_layers(lm, ids.to(lm.device), layers, on_layer)


def score_heads(lm, config: HeadConfig = HeadConfig(), *, progress: bool = False) -> HeadResult:
    """Previous-token, duplicate-token and induction scores of every head.

    Args:
        lm: a `interp.models.LoadedModel`.
        config: `HeadConfig`.

    Returns:
        `HeadResult`.

    Raises:
        InterpError: bad settings, empty texts, layers out of range, a text that does not fit.
    """
    from interp.hooks import check_layers

    config.validate()
    kinds = parse_kinds(config.kinds)
    config = replace(config, kinds=kinds)
    layers = check_layers(lm, config.layers)
    sources = (("random",) if config.random else ()) + (("text",) if config.texts is not None else ())
    sums = np.zeros((len(sources), len(kinds), len(layers), lm.arch.n_heads))
    counts = np.zeros((len(sources), len(kinds)), dtype=np.int64)
    if config.random:
        tok = getattr(lm, "tokenizer", None)
        first = getattr(tok, "bos_token_id", None) if tok is not None else None
        avoid = list(getattr(tok, "all_special_ids", []) or []) if tok is not None else []
        ids = repeated_random_tokens(config.n_seqs, config.length, _vocab_size(lm), config.seed, first, avoid)
        lm.check_length(ids.shape[1])
        _score_batch(lm, ids, config, layers, sums, counts, sources.index("random"))
    if config.texts is not None:
        if getattr(lm, "tokenizer", None) is None:
            raise InterpError("scoring texts needs the model's tokenizer: load the model with interp.load_model")
        for text in config.texts:
            _score_batch(lm, lm.encode(text), config, layers, sums, counts, sources.index("text"))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts[..., None, None] > 0, sums / np.maximum(counts, 1)[..., None, None], np.nan)
    return HeadResult(config, lm.name, tuple(layers), lm.arch.n_heads, sources, kinds, scores, counts)

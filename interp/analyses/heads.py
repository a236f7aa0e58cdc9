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

Two sources: repeated random tokens (`interp.datasets.random_tokens`, the standard induction
probe) and the user's own texts. This module is pure: `expected_keys` and `detector_targets`
read the expected keys off token ids, `kind_sums` reduces one layer's target-key statistic,
`combine` turns the per-unit sums into a `HeadResult`. The runner that drives the model is
`interp.experiments.heads`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.checks import Check, as_records, at_least, not_tested
from interp.analyses.ranking import rank_heads
from interp.config import Config
from interp.errors import InterpError

__all__ = [
    "KINDS",
    "HeadConfig",
    "HeadResult",
    "parse_kinds",
    "expected_keys",
    "detector_targets",
    "row_scores",
    "kind_sums",
    "rows_in_window",
    "combine",
]

KINDS = ("previous", "duplicate", "induction")


def parse_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """'induction,previous' (or a sequence) -> ('previous', 'induction') in `KINDS` order."""
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    bad = [k for k in items if k not in KINDS]
    if bad or not items:
        raise InterpError(
            f"unknown head kind(s) {bad or '(none given)'}: choose from {', '.join(KINDS)}, e.g. induction,previous"
        )
    return tuple(k for k in KINDS if k in items)


@dataclass(frozen=True)
class HeadConfig(Config):
    """What the head detectors measure, on which tokens.

    Attributes:
        kinds: detectors to run, a subset of `KINDS` (kept in `KINDS` order).
        random: score on repeated random tokens.
        n_seqs: random sequences (one forward pass, batched).
        length: random tokens per copy; each sequence is 1 + 2 * length tokens.
        seed: seed of the random tokens.
        texts: the user's texts (scored one by one), or None.
        max_targets: most recent occurrences kept per row for duplicate / induction.
        exclude_current: drop j = i from the expected keys (TransformerLens's default).
        layers: layers to score; None = all.
        backend: `interp.kernels.attention_stats` backend.
        min_rows_in_window: check: in a windowed layer, this share of the rows with an expected
            key must have one within the window (a row whose expected keys are all out of sight
            scores 0 by construction, not because the head ignores them).
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
    backend: str = "auto"  # kernel backend
    min_rows_in_window: float = 0.9  # check: share of rows whose expected key a windowed layer can see (no paper value)

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        self.normalise(kinds=parse_kinds(self.kinds))
        if not 0.0 <= self.min_rows_in_window <= 1.0:
            raise InterpError(f"min_rows_in_window must lie in [0, 1], got {self.min_rows_in_window!r}")
        if self.layers is not None:
            self.normalise(layers=tuple(self.layers))
        if isinstance(self.texts, str):
            raise InterpError("texts must be a sequence of strings: wrap a single text as (text,)")
        if self.texts is not None:
            self.normalise(texts=tuple(self.texts))
            if not self.texts or not all(t.strip() for t in self.texts):
                raise InterpError(
                    "texts is empty or holds an empty text: give at least one non-blank text, or texts=None"
                )
        if not self.random and self.texts is None:
            raise InterpError("nothing to score: keep random=True or give texts")
        for name in ("n_seqs", "length", "max_targets"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise InterpError(f"{name} must be an int >= 1, got {v!r}")

    def settings(self) -> dict:
        """JSON-friendly settings (texts summarised by count and total characters)."""
        out = super().settings()
        texts = out.pop("texts")
        out["texts"] = None if texts is None else f"{len(texts)} texts, {sum(map(len, texts))} chars"
        return out

    @property
    def sources(self) -> tuple[str, ...]:
        """The token sources scored: "random" and/or "text"."""
        return (("random",) if self.random else ()) + (("text",) if self.texts is not None else ())


# --------------------------------------------------------------------------------------------
# expected keys and their mass
# --------------------------------------------------------------------------------------------


def expected_keys(
    ids: Sequence[int] | Int[Tensor, " pos"], kind: str, max_targets: int = 8, exclude_current: bool = True
) -> Int[Tensor, "pos n"]:
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


def detector_targets(
    ids: Int[Tensor, "batch pos"],
    kinds: Sequence[str],
    max_targets: int = 8,
    exclude_current: bool = True,
    bos_id: Optional[int] = None,
) -> tuple[Int[Tensor, "batch pos n"], tuple[int, ...], tuple[int, ...]]:
    """The expected keys of every detector side by side, for one batch.

    A sequence that opens with ``bos_id`` has no expected key at position 0: BOS is the sink a
    model trained with it rests on, not content a detector looks for (else row 1's previous
    token would be BOS, and every sink head would score 1 there as a "previous-token head").

    Returns:
        (targets [batch, pos, n]: each kind's `expected_keys` concatenated along the last axis,
        widths: the slots of each kind, rows: per kind, the query rows with an expected key).
    """
    per_kind = [
        torch.stack([expected_keys(row, kind, max_targets, exclude_current) for row in ids.cpu()]) for kind in kinds
    ]  # each [batch, pos, n]
    if bos_id is not None:
        opens = (ids[:, 0].cpu() == bos_id)[:, None, None]  # [batch, 1, 1]
        per_kind = [t.masked_fill(opens & (t == 0), -1) for t in per_kind]
    widths = tuple(t.shape[-1] for t in per_kind)
    rows = tuple(int((t >= 0).any(-1).sum()) for t in per_kind)
    return torch.cat(per_kind, -1), widths, rows


def row_scores(mass: Float[Tensor, "*rows n"]) -> Float[Tensor, "*rows"]:
    """Per-row detector score: the summed mass over a row's expected keys.

    Args:
        mass: [..., n_targets] A_{i, t} with NaN where the target slot is empty.

    Returns:
        [...] sum over the filled slots; NaN where the row has no expected key.
    """
    has = ~mass.isnan()
    return torch.where(has.any(-1), mass.nan_to_num(0.0).sum(-1), torch.full_like(mass[..., 0], float("nan")))


def kind_sums(target: Float[Tensor, "batch head pos n"], widths: Sequence[int]) -> np.ndarray:
    """[kind, head] float64 sums of the row scores of one layer, over the batch and the rows.

    Args:
        target: the kernel's target-key statistic A_{i, t} on `detector_targets`' targets
            (NaN in empty slots).
        widths: the slots of each kind (from `detector_targets`).
    """
    out, start = [], 0
    for width in widths:
        r = row_scores(target[..., start : start + width].double().cpu())  # [batch, head, pos]
        out.append(r.nan_to_num(0.0).sum((0, 2)).numpy())
        start += width
    return np.stack(out)


def rows_in_window(targets: Int[Tensor, "batch pos n"], widths: Sequence[int], window: int) -> tuple[int, ...]:
    """Per kind, the query rows with an expected key that a layer with sliding window W can see.

    Query i sees key t when i - t < W; a row whose expected keys all lie further back scores 0
    in that layer whatever the head does (on random tokens said twice, duplicate keys lie
    ``length`` back and induction keys ``length - 1``).

    Args:
        targets: expected key per query row and slot, from `detector_targets` (-1 = empty slot).
        widths: slots per detector kind, from `detector_targets`.
        window: W.
    """
    i = torch.arange(targets.shape[1], device=targets.device)[None, :, None]
    visible = (targets >= 0) & (i - targets < window)
    out, start = [], 0
    for width in widths:
        out.append(int(visible[..., start : start + width].any(-1).sum()))
        start += width
    return tuple(out)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


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
        windows: per analysed layer, its sliding window (None: global); empty: all global.
        window_rows: per window W of an analysed layer, [source, kind] rows with an expected key
            within W (`rows_in_window`); empty where not measured.
    """

    config: HeadConfig
    model: str
    layers: tuple[int, ...]
    n_heads: int
    sources: tuple[str, ...]
    kinds: tuple[str, ...]
    scores: np.ndarray
    n_rows: np.ndarray
    windows: tuple[Optional[int], ...] = ()
    window_rows: Mapping[int, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def checks(self) -> tuple[Check, ...]:
        """For each window W of an analysed layer: the share of rows with an expected key that the
        layer can see, worst over sources and detectors, against ``config.min_rows_in_window``."""
        out = []
        for w in sorted({w for w in self.windows if w is not None}):
            seen = self.window_rows.get(w)
            if seen is None:
                continue
            counted = self.n_rows > 0  # a detector with no row that has an expected key says nothing here
            share = np.where(counted, seen / np.maximum(self.n_rows, 1), np.inf)
            s, k = np.unravel_index(np.argmin(share), share.shape)
            layers = [l for l, lw in zip(self.layers, self.windows) if lw == w]
            check = at_least(
                f"expected_keys_in_window_{w}", float(share[s, k]) if counted.any() else float("nan"),
                self.config.min_rows_in_window,
                f"share of the {self.sources[s]}/{self.kinds[k]} rows with an expected key within the window of "
                f"{w} tokens (layers {', '.join(map(str, layers))}); rows whose keys lie further back score 0 there "
                "whatever the head does",
            )  # fmt: skip
            if not counted.any():  # an empty set passed before (its share was set to 1)
                check = not_tested(check, "no row of any source or detector has an expected key: give longer texts")
            out.append(check)
        return tuple(out)

    def grid(self, kind: str, source: Optional[str] = None) -> np.ndarray:
        """[layer index, head] scores of one detector (default source: the first)."""
        s = self.sources.index(source or self.sources[0])
        return self.scores[s, self.kinds.index(kind)]

    def top(self, kind: str, n: int = 5, source: Optional[str] = None) -> list[tuple[int, int, float]]:
        """The n highest-scoring heads of a detector: [(layer, head, score)] (`rank_heads`)."""
        return rank_heads(self.grid(kind, source), n, layers=self.layers)

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
        """The top ``n`` heads of every source and detector, and the rows averaged over."""
        return {
            "model": self.model,
            "sources": list(self.sources),
            "top": {
                f"{source}/{kind}": [[l, h, round(v, 4)] for l, h, v in self.top(kind, n, source)]
                for source in self.sources
                for kind in self.kinds
            },
            "n_rows": {
                f"{s}/{k}": int(self.n_rows[i, j]) for i, s in enumerate(self.sources) for j, k in enumerate(self.kinds)
            },
            "checks": as_records(self.checks),
        }


def combine(
    config: HeadConfig,
    model: str,
    layers: Sequence[int],
    n_heads: int,
    records: Mapping[str, Sequence[Mapping]],
    windows: Optional[Sequence[Optional[int]]] = None,
) -> HeadResult:
    """Per-unit sums -> mean scores per source.

    Args:
        records: source ("random", "text") -> its units' records in order, each
            ``{"sums": [kind][layer index][head], "rows": [kind]}`` (from the runner), and
            ``"in_window": {W: [kind]}`` (`rows_in_window`) where layers have windows.
        windows: per layer of ``layers``, its sliding window (None: global); None: all global.
    """
    sources = config.sources
    sums = np.zeros((len(sources), len(config.kinds), len(layers), n_heads))
    counts = np.zeros((len(sources), len(config.kinds)), dtype=np.int64)
    for s, source in enumerate(sources):
        for rec in records[source]:
            sums[s] += np.asarray(rec["sums"], dtype=float).transpose(
                1, 0, 2
            )  # [layer, kind, head] -> [kind, layer, head]
            counts[s] += np.asarray(rec["rows"], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts[..., None, None] > 0, sums / np.maximum(counts, 1)[..., None, None], np.nan)
    window_rows: dict[int, np.ndarray] = {}
    for w in {w for w in windows or () if w is not None}:
        got = [[rec.get("in_window", {}).get(str(w)) for rec in records[source]] for source in sources]
        if all(r is not None for per in got for r in per):  # a resumed record without them: not measured
            window_rows[w] = np.array([np.sum(per, axis=0) for per in got], dtype=np.int64).reshape(counts.shape)
    return HeadResult(
        config, model, tuple(layers), n_heads, sources, config.kinds, scores, counts,
        tuple(windows) if windows is not None else (), window_rows,
    )  # fmt: skip

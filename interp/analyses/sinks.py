"""Attention sinks: first-token sinks (Gu et al. 2024) and hidden sinks (Yu et al. 2024).

Everything here is computed from the column and row statistics of `interp.kernels`, one layer
at a time, so a long text (8k tokens) never needs a [T, T] attention matrix:

- alpha_j = recv_mean_j, the attention key j receives averaged over the queries that may see
  it (Gu et al. 2024, "When Attention Sink Emerges in Language Models"). A (text, layer, head)
  counts as a sink at position j when alpha_j > eps (eps = 0.3); the *sink rate* is the
  percentage of (text, layer, head) that do, reported for j = 0 and, as a profile, for every j.
- first-token mass: sink_i(n) (the mass of query i on the first n tokens) averaged over the
  query rows that can see more than the first n tokens (i >= n). With n = 1 it is alpha_0
  without the trivial row 0 (which can only attend to itself):
  alpha_0 = (1 + (T - 1) * first_token_mass) / T.
- hidden sinks (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks", ACT): per
  head S = {j : recv_mean_j > tau} (tau = 0.1); the first member of S (nearly always
  position 0) is the ordinary sink and is not counted as hidden.

Keys near the end of a text are averaged over very few queries (the last key over one: its
alpha is the last query's self-attention), so they cross tau by chance. ``min_queries``
(default 16) keeps only keys seen by at least that many queries as candidate sinks;
``min_queries=1`` is docs/METRICS.md / Yu et al. exactly.

This module is pure: functions over kernel statistics (`first_token_mass`, `sink_rate`,
`sink_members`, `reduce_layer`, `combine`, ...), the frozen `SinkConfig` and `SinkResult`. The
runner that drives the model, one forward pass per text through ``interp.hooks.stream_layers``,
is `interp.experiments.sinks`; the texts come from `interp.datasets.texts`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyses._config import Config
from interp.analyses.checks import Check, as_records, at_least, holds
from interp.errors import InterpError

__all__ = [
    "SinkConfig",
    "SinkResult",
    "TOKEN_TYPES",
    "reduce_layer",
    "combine",
    "first_token_mass",
    "sink_rate",
    "sink_members",
    "hidden_sinks",
    "token_type",
]

TOKEN_TYPES = ("special", "newline", "whitespace", "punctuation", "number", "stopword", "other")
_STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from as into onto over under
    is are was were be been being am do does did has have had it its this that these those he she
    they we you i me my our your their his her him them us not no nor so than there here which who
    whom whose what when where why how all any each both some such only own same too very can will
    just should would could may might must shall""".split()
)


# --------------------------------------------------------------------------------------------
# configuration and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkConfig(Config):
    """What the sinks experiment measures, on which texts.

    Attributes:
        texts: the texts to analyse; None = the shipped `interp/data/sink_texts.txt`.
        length: tokens of each text analysed (the sink window). Longer texts are cut to their
            first ``length`` tokens; a shorter text raises (lower it, or use ``pack``).
        pack: join all texts (blank line between) and cut the token stream into consecutive
            windows of ``length`` tokens (how Gu et al. sample fixed-length sequences).
        max_texts: analyse only the first this many texts (windows); None = all.
        eps: Gu et al. 2024 sink threshold on alpha_j.
        tau: Yu et al. 2024 (ACT) hidden-sink threshold on recv_mean_j.
        min_queries: a key is a candidate sink only when at least this many queries see it
            (see module docstring); 1 reproduces docs/METRICS.md / Yu et al. exactly.
        sink_tokens: n of the first-token mass sink_i(n).
        layers: layers to analyse; None = all.
        backend: `interp.kernels.attention_stats` backend ("auto", "torch", "triton", "reference").
    """

    texts: Optional[tuple[str, ...]] = None  # None: the shipped sink_texts.txt
    length: int = 256  # tokens per text (window)
    pack: bool = False  # join texts and cut into windows of `length`
    max_texts: Optional[int] = None  # None: every text
    eps: float = 0.3  # Gu et al. 2024
    tau: float = 0.1  # Yu et al. 2024
    min_queries: int = 16  # 1 = docs/METRICS.md exactly
    sink_tokens: int = 1  # first-token mass over the first n tokens
    layers: Optional[tuple[int, ...]] = None  # None: all layers
    backend: str = "auto"  # kernel backend

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.texts is not None and not isinstance(self.texts, str):
            object.__setattr__(self, "texts", tuple(self.texts))
        if isinstance(self.texts, str):
            raise InterpError("texts must be a sequence of strings: wrap a single text as (text,)")
        if not 0.0 < self.eps < 1.0:
            raise InterpError(f"eps must lie in (0, 1), got {self.eps} (Gu et al. use 0.3)")
        if not 0.0 < self.tau < 1.0:
            raise InterpError(f"tau must lie in (0, 1), got {self.tau} (Yu et al. use 0.1)")
        if not (isinstance(self.sink_tokens, int) and self.sink_tokens >= 1):
            raise InterpError(f"sink_tokens must be an int >= 1, got {self.sink_tokens!r}")
        if not (isinstance(self.min_queries, int) and self.min_queries >= 1):
            raise InterpError(f"min_queries must be an int >= 1, got {self.min_queries!r} (1 = no tail guard)")
        if not (isinstance(self.length, int) and self.length > self.sink_tokens):
            raise InterpError(
                f"length must be an int larger than sink_tokens ({self.sink_tokens}), got {self.length!r}: "
                "the window needs tokens after the sink"
            )
        if self.max_texts is not None and not (isinstance(self.max_texts, int) and self.max_texts >= 1):
            raise InterpError(f"max_texts must be None or an int >= 1, got {self.max_texts!r}")

    def settings(self) -> dict:
        """JSON-friendly settings (texts summarised by count and total characters)."""
        out = super().settings()
        texts = out.pop("texts")
        out["texts"] = (
            "shipped sink_texts.txt" if texts is None else f"{len(texts)} texts, {sum(map(len, texts))} chars"
        )
        return out


@dataclass(frozen=True)
class SinkResult:
    """Sink measurements of one model on one text set.

    Arrays are indexed [text, layer index, head] where layer index i is ``layers[i]``.

    Attributes:
        config: the settings used.
        model: model name.
        layers: the analysed layers.
        n_heads: query heads per layer.
        tokens: per text, the display string of each analysed token.
        token_types: per text, `token_type` of each token.
        first_token_mass: [text, layer, head] mean sink_i(n) over rows i >= n.
        alpha0: [text, layer, head] alpha_0 = recv_mean_0 (Gu et al. 2024).
        position_count: [length] number of (text, layer, head) with alpha_j > eps at each j.
        hits: [n_hits, 4] int (text, layer, head, position) of every member of S (recv_mean > tau
            among keys seen by >= min_queries queries).
        hit_alpha: [n_hits] recv_mean at the hit.
        hit_hidden: [n_hits] bool, False for the first member of S of its (text, layer, head).
        windows: per analysed layer, its sliding window W (None: global attention); empty: all global.
        first_is_bos: per text, whether its position 0 is the BOS token; empty: not known.
        model_bos: whether the model prepends BOS to every text (None: not known).
    """

    config: SinkConfig
    model: str
    layers: tuple[int, ...]
    n_heads: int
    tokens: tuple[tuple[str, ...], ...]
    token_types: tuple[tuple[str, ...], ...]
    first_token_mass: np.ndarray
    alpha0: np.ndarray
    position_count: np.ndarray
    hits: np.ndarray
    hit_alpha: np.ndarray
    hit_hidden: np.ndarray
    windows: tuple[Optional[int], ...] = ()
    first_is_bos: tuple[bool, ...] = ()
    model_bos: Optional[bool] = None

    @property
    def n_texts(self) -> int:
        return len(self.tokens)

    @property
    def length(self) -> int:
        """Tokens per text."""
        return int(self.position_count.shape[0])

    def layer_windows(self) -> tuple[Optional[int], ...]:
        """Per analysed layer, its sliding window (None: global), padded for results without them."""
        return self.windows if len(self.windows) == len(self.layers) else (None,) * len(self.layers)

    def layer_kinds(self) -> tuple[str, ...]:
        """Per analysed layer, "global" or "windowed W=<W>" (a window as long as the text acts as global)."""
        return tuple("global" if w is None or w >= self.length else f"windowed W={w}" for w in self.layer_windows())

    def kind_sink_rates(self) -> dict[str, float]:
        """Sink rate at position 0 in percent per layer kind (see `layer_kinds`)."""
        kinds = np.asarray(self.layer_kinds())
        return {str(k): sink_rate(self.alpha0[:, kinds == k], self.config.eps) for k in dict.fromkeys(kinds)}

    @property
    def checks(self) -> tuple[Check, ...]:
        """Whether "the first token" is the sink the papers mean, and measurable in every layer.

        - ``position_0_is_bos`` (when the model prepends BOS): every window must start with BOS;
          the first-token sink of a model trained with BOS forms on BOS, so on a window whose
          position 0 is an ordinary token its sink rate can read 0% and mean nothing.
        - ``rows_seeing_position_0`` (when a layer has a window shorter than the text): the
          first-token mass of a windowed layer is averaged over the min(T, W) - n rows that see
          position 0; they must be at least ``min_queries``.
        """
        out = []
        if self.model_bos is not None and len(self.first_is_bos) == self.n_texts:
            share = float(np.mean(self.first_is_bos)) if self.first_is_bos else float("nan")
            if self.model_bos:
                out.append(
                    at_least(
                        "position_0_is_bos", share, 1.0,
                        f"share of the {self.n_texts} windows whose position 0 is the BOS token the model prepends to "
                        "every text; where it is not, the first-token sink is measured on an ordinary token",
                    )
                )  # fmt: skip
            else:
                out.append(
                    holds(
                        "position_0_is_bos", True,
                        f"the model prepends no BOS: position 0 is the text's first token, as the model sees text "
                        f"(BOS at position 0 in {share:.0%} of windows)",
                    )
                )  # fmt: skip
        windowed = [w for w in self.layer_windows() if w is not None and w < self.length]
        if windowed:
            rows = min(windowed) - self.config.sink_tokens
            out.append(
                at_least(
                    "rows_seeing_position_0", rows, self.config.min_queries,
                    f"query rows past the sink that see position 0 in the narrowest windowed layer (W={min(windowed)}): "
                    "the first-token mass and alpha_0 of windowed layers average over these rows only",
                )
            )  # fmt: skip
        return tuple(out)

    @property
    def sink_rate(self) -> float:
        """Gu et al. sink rate at position 0 in percent, over every (text, layer, head)."""
        return sink_rate(self.alpha0, self.config.eps)

    def layer_sink_rates(self) -> pd.DataFrame:
        """Per layer: its kind (global / windowed W), window, sink rate (percent of (text, head) with
        alpha_0 > eps), mean alpha_0 and mean first-token mass."""
        return pd.DataFrame(
            {
                "layer": list(self.layers),
                "kind": list(self.layer_kinds()),
                "window": pd.array(list(self.layer_windows()), dtype="Int64"),
                "sink_rate_pct": [sink_rate(self.alpha0[:, i], self.config.eps) for i in range(len(self.layers))],
                "alpha0": self.alpha0.mean(axis=(0, 2)),
                "first_token_mass": self.first_token_mass.mean(axis=(0, 2)),
            }
        )

    def position_sink_rate(self) -> np.ndarray:
        """[length] percent of (text, layer, head) with alpha_j > eps, per position j."""
        return 100.0 * self.position_count / (self.n_texts * len(self.layers) * self.n_heads)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (layer, head), averaged over texts (this is heads.csv).

        Columns: layer, head, first_token_mass, alpha0, sink_rate_pct (percent of texts with
        alpha_0 > eps), n_hidden_sinks (hidden sinks summed over texts), hidden_per_text,
        hidden_mass (mean over texts of the summed recv_mean of the head's hidden sinks).
        """
        n_layers = len(self.layers)
        hidden = self.hits[self.hit_hidden]
        counts = np.zeros((n_layers, self.n_heads), dtype=np.int64)
        mass = np.zeros((n_layers, self.n_heads))
        index = {layer: i for i, layer in enumerate(self.layers)}
        for (_text, layer, head, _), a in zip(hidden, self.hit_alpha[self.hit_hidden]):
            counts[index[int(layer)], head] += 1
            mass[index[int(layer)], head] += a
        li, hi = np.meshgrid(np.arange(n_layers), np.arange(self.n_heads), indexing="ij")
        li, hi = li.ravel(), hi.ravel()
        return pd.DataFrame(
            {
                "layer": np.asarray(self.layers)[li],
                "head": hi,
                "first_token_mass": self.first_token_mass.mean(0)[li, hi],
                "alpha0": self.alpha0.mean(0)[li, hi],
                "sink_rate_pct": 100.0 * (self.alpha0 > self.config.eps).mean(0)[li, hi],
                "n_hidden_sinks": counts[li, hi],
                "hidden_per_text": counts[li, hi] / self.n_texts,
                "hidden_mass": mass[li, hi] / self.n_texts,
            }
        )

    def sinks_dataframe(self) -> pd.DataFrame:
        """One row per member of S (this is sinks.csv): text, layer, head, position, token,
        token_type, alpha (recv_mean), hidden (False for the first hit of the head)."""
        h = self.hits
        return pd.DataFrame(
            {
                "text": h[:, 0],
                "layer": h[:, 1],
                "head": h[:, 2],
                "position": h[:, 3],
                "token": [self.tokens[t][p] for t, p in zip(h[:, 0], h[:, 3])],
                "token_type": [self.token_types[t][p] for t, p in zip(h[:, 0], h[:, 3])],
                "alpha": self.hit_alpha,
                "hidden": self.hit_hidden,
            }
        )

    def token_type_table(self) -> pd.DataFrame:
        """Which token types become hidden sinks, and how often relative to how common they are.

        Columns: token_type, n_hidden ((text, layer, head, position) hits), n_positions
        (distinct (text, position) that are a hidden sink in at least one head), share (of
        hidden hits), base_share (of analysed tokens past position 0), enrichment
        (share / base_share; > 1: the type becomes a sink more often than its frequency).
        """
        hidden = self.hits[self.hit_hidden]
        types = [self.token_types[t][p] for t, p in zip(hidden[:, 0], hidden[:, 3])]
        n_hidden = pd.Series(types, dtype=object).value_counts()
        distinct = {(int(t), int(p)) for t, p in zip(hidden[:, 0], hidden[:, 3])}
        n_pos = pd.Series([self.token_types[t][p] for t, p in distinct], dtype=object).value_counts()
        base = pd.Series([ty for tt in self.token_types for ty in tt[1:]], dtype=object).value_counts()
        rows = []
        total_hidden = max(len(types), 1)
        total_base = max(int(base.sum()), 1)
        for ty in TOKEN_TYPES:
            share = n_hidden.get(ty, 0) / total_hidden
            base_share = base.get(ty, 0) / total_base
            rows.append(
                {
                    "token_type": ty,
                    "n_hidden": int(n_hidden.get(ty, 0)),
                    "n_positions": int(n_pos.get(ty, 0)),
                    "share": share,
                    "base_share": base_share,
                    "enrichment": share / base_share if base_share > 0 else float("nan"),
                }
            )
        return pd.DataFrame(rows)

    def top_hidden_tokens(self, n: int = 15) -> pd.DataFrame:
        """The tokens that are hidden sinks most often: token, token_type, n_hidden, n_heads
        (distinct (layer, head)), mean_alpha."""
        df = self.sinks_dataframe()
        df = df[df["hidden"]]
        if df.empty:
            return pd.DataFrame(columns=["token", "token_type", "n_hidden", "n_heads", "mean_alpha"])
        g = df.groupby(["token", "token_type"])
        out = pd.DataFrame(
            {
                "n_hidden": g.size(),
                "n_heads": g.apply(lambda x: len(set(zip(x["layer"], x["head"]))), include_groups=False),
                "mean_alpha": g["alpha"].mean(),
            }
        ).reset_index()
        return out.sort_values(["n_hidden", "n_heads"], ascending=False).head(n).reset_index(drop=True)

    def summary(self) -> dict:
        """Headline numbers (for run.json and the README)."""
        types = self.token_type_table()
        top = types.sort_values("n_hidden", ascending=False)
        layer_rates = self.layer_sink_rates()
        return {
            "n_texts": self.n_texts,
            "tokens_per_text": int(self.position_count.shape[0]),
            "sink_rate_pct": round(self.sink_rate, 2),
            "sink_rate_pct_by_kind": {k: round(v, 2) for k, v in self.kind_sink_rates().items()},
            "position_0_is_bos": None
            if len(self.first_is_bos) != self.n_texts
            else round(float(np.mean(self.first_is_bos)), 3),
            "model_prepends_bos": self.model_bos,
            "mean_alpha0": round(float(self.alpha0.mean()), 4),
            "mean_first_token_mass": round(float(self.first_token_mass.mean()), 4),
            "layer_sink_rate_pct": {int(r.layer): round(float(r.sink_rate_pct), 1) for r in layer_rates.itertuples()},
            "n_hidden_sinks": int(self.hit_hidden.sum()),
            "hidden_per_head_per_text": round(
                float(self.hit_hidden.sum()) / (self.n_texts * len(self.layers) * self.n_heads), 3
            ),
            "hidden_token_types": {
                r.token_type: {"share": round(r.share, 3), "enrichment": round(r.enrichment, 2)}
                for r in top.itertuples()
                if r.n_hidden > 0
            },
            "top_hidden_tokens": [
                {"token": r.token, "n_hidden": int(r.n_hidden), "n_heads": int(r.n_heads)}
                for r in self.top_hidden_tokens(10).itertuples()
            ],
            "checks": as_records(self.checks),
        }


# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------


def first_token_mass(
    sink: Float[Tensor, "*batch head query_pos"], sink_tokens: int = 1, window: Optional[int] = None
) -> Tensor:
    """Mean of sink_i(n) over the query rows that see more than the sink and see position 0.

    Rows n <= i (a row i < n sees nothing but the sink); in a windowed layer also i < W, the
    rows for which position 0 is in sight (the others put no mass there by construction).

    Args:
        sink: the kernel's row statistic ``sink`` for every query row (padded rows NaN).
        sink_tokens: n, the number of first tokens the statistic counts.
        window: the layer's sliding window W, or None (global attention).

    Returns:
        [*batch, head] float64, NaN-rows ignored.
    """
    rows = sink[..., sink_tokens : window if window is not None else None].double()
    if rows.shape[-1] == 0:
        raise InterpError(f"no query row sees past the first {sink_tokens} token(s) within the window of {window}")
    return torch.nanmean(rows, dim=-1)


def sink_rate(alpha: np.ndarray | Tensor, eps: float = 0.3) -> float:
    """Gu et al. 2024 sink rate: percent of entries (sample, layer, head) with alpha > eps."""
    a = torch.as_tensor(np.asarray(alpha, dtype=float) if not isinstance(alpha, Tensor) else alpha)
    if a.numel() == 0:
        raise InterpError("no alpha values to compute a sink rate from")
    return float(100.0 * (a > eps).double().mean())


def sink_members(
    recv_mean: Float[Tensor, "*batch key_pos"], tau: float = 0.1, min_queries: int = 1, window: Optional[int] = None
) -> tuple[Tensor, Tensor]:
    """Sink set S and its hidden part, per head (Yu et al. 2024).

    S = {j : recv_mean_j > tau and at least ``min_queries`` queries see j}; the hidden sinks
    are S without its first member (the ordinary sink, usually position 0). With causal
    attention the keys seen by fewer than m queries are the last m - 1 key indices (left
    padding does not change that). NaN (padded keys) is never in S.

    Args:
        recv_mean: the kernel's column statistic.
        tau: threshold.
        min_queries: 1 = docs/METRICS.md exactly.

    Returns:
        (member, hidden): bool tensors shaped like ``recv_mean``.
    """
    key_pos = recv_mean.shape[-1]
    needed = min_queries if window is None else min(min_queries, window)
    eligible = torch.arange(key_pos, device=recv_mean.device) <= key_pos - needed
    member = (recv_mean > tau) & eligible
    first = member.int().cumsum(-1) == 1  # true from the first hit until the second
    hidden = member & ~(first & member)
    return member, hidden


def hidden_sinks(
    recv_mean: Float[Tensor, "*batch key_pos"], tau: float = 0.1, min_queries: int = 1, window: Optional[int] = None
) -> Tensor:
    """Bool mask of the hidden sinks: S without its first member (see `sink_members`)."""
    return sink_members(recv_mean, tau, min_queries, window)[1]


def token_type(token: str, special: bool = False) -> str:
    """Coarse type of a token string, one of `TOKEN_TYPES`.

    "special" (tokenizer special tokens, e.g. BOS), "newline" (only whitespace, with a line
    break), "whitespace", "punctuation" (only punctuation or symbol characters), "number"
    (digits), "stopword" (a short English function word, case-insensitive), "other".
    """
    if special:
        return "special"
    stripped = token.strip()
    if not stripped:
        return "newline" if ("\n" in token or "\r" in token) else "whitespace"
    if all(unicodedata.category(c)[0] in "PS" for c in stripped):
        return "punctuation"
    if stripped.isdigit():
        return "number"
    if stripped.lower() in _STOPWORDS:
        return "stopword"
    return "other"


def reduce_layer(
    sink: Float[Tensor, "head query_pos"],
    recv_mean: Float[Tensor, "head key_pos"],
    layer: int,
    config: SinkConfig,
    window: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list]]:
    """One layer's kernel statistics of one window, reduced to what a `SinkResult` keeps.

    Args:
        sink: the kernel's row statistic ``sink`` (mass of each query on the first
            ``config.sink_tokens`` tokens), one window.
        recv_mean: the kernel's column statistic ``recv_mean`` (alpha_j), same window.
        layer: the layer's index (stored in the hits).
        window: the layer's sliding window W, or None (see the module docstring for windowed layers).

    Returns:
        (first_token_mass [head], alpha0 [head], count [key_pos] of heads with alpha_j > eps,
        hits: [layer, head, position, alpha, hidden] of every sink member).
    """
    rm = recv_mean.double().cpu()
    ftm = first_token_mass(sink.cpu(), config.sink_tokens, window).numpy()
    member, hidden = sink_members(rm, config.tau, config.min_queries, window)
    hits = [[layer, h, j, float(rm[h, j]), bool(hidden[h, j])] for h, j in member.nonzero().tolist()]
    return ftm, rm[:, 0].numpy(), (rm > config.eps).sum(0).numpy(), hits


def combine(
    lm_name: str,
    config: SinkConfig,
    layers: Sequence[int],
    n_heads: int,
    windows_tokens,
    records,
    *,
    layer_windows: Optional[Sequence[Optional[int]]] = None,
    first_is_bos: Optional[Sequence[bool]] = None,
    model_bos: Optional[bool] = None,
) -> SinkResult:
    """Assemble per-window records (from `scan_window`) and their tokens into a `SinkResult`.

    Args:
        windows_tokens (Sequence[tuple[list[str], list[bool]]]): per window, (token strings,
            special flags).
        records (Sequence[dict]): per window, the record of `interp.experiments.sinks.scan_window` (JSON-able:
            first_token_mass, alpha0, position_count, hits), in the same order.
        layer_windows: per layer of ``layers``, its sliding window (None: global); None: all global.
        first_is_bos: per window, whether its position 0 is the BOS token (None: not known).
        model_bos: whether the model prepends BOS to every text (None: not known).
    """
    hits, alphas, hidden = [], [], []
    for t, rec in enumerate(records):
        for layer, head, pos, alpha, hid in rec["hits"]:
            hits.append((t, layer, head, pos))
            alphas.append(alpha)
            hidden.append(hid)
    tokens = tuple(tuple(toks) for toks, _ in windows_tokens)
    types = tuple(tuple(token_type(s, sp) for s, sp in zip(toks, special)) for toks, special in windows_tokens)
    return SinkResult(
        config=config,
        model=lm_name,
        layers=tuple(layers),
        n_heads=n_heads,
        tokens=tokens,
        token_types=types,
        first_token_mass=np.asarray([r["first_token_mass"] for r in records], dtype=float),
        alpha0=np.asarray([r["alpha0"] for r in records], dtype=float),
        position_count=np.sum([np.asarray(r["position_count"]) for r in records], axis=0),
        hits=np.asarray(hits, dtype=np.int64).reshape(-1, 4),
        hit_alpha=np.asarray(alphas, dtype=float),
        hit_hidden=np.asarray(hidden, dtype=bool),
        windows=tuple(layer_windows) if layer_windows is not None else (),
        first_is_bos=tuple(bool(b) for b in first_is_bos) if first_is_bos is not None else (),
        model_bos=model_bos,
    )

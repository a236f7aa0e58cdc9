"""`SinkResult`: the sink measurements of one model on one text set, and its tables.

Arrays are indexed [text, layer index, head]. Besides Gu et al.'s first-token sink rate and Yu
et al.'s hidden sinks, a result run with value weighting holds the value-weighted first-token
mass of every (text, layer, head), which sorts each first-token sink into *active* or *no-op*
(`interp.analyses.sinks.measures.noop_sinks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from interp.analyses.checks import Check, as_records, at_least
from interp.analyses.ranking import grid_cells
from interp.analyses.sinks.config import SinkConfig
from interp.analyses.sinks.measures import TOKEN_TYPES, noop_sinks, sink_rate, value_ratio

__all__ = ["SinkResult"]


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
        weighted_first_token_mass: [text, layer, head] the first-token mass of the value-weighted
            attention a_ij ||W_O^h v_j|| / sum_j' a_ij' ||W_O^h v_j'|| (mean of ``w_sink`` over the
            same rows); None when the run did not weight by values.
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
    weighted_first_token_mass: Optional[np.ndarray] = None

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

        - ``position_0_is_bos`` (only when the model prepends BOS: a check that could not fail is
          not reported): every window must start with BOS;
          the first-token sink of a model trained with BOS forms on BOS, so on a window whose
          position 0 is an ordinary token its sink rate can read 0% and mean nothing.
        - ``rows_seeing_position_0`` (when a layer has a window shorter than the text): the
          first-token mass of a windowed layer is averaged over the min(T, W) - n rows that see
          position 0; they must be at least ``min_queries``.
        """
        out = []
        if self.model_bos is not None and len(self.first_is_bos) == self.n_texts:
            share = float(np.mean(self.first_is_bos)) if self.first_is_bos else float("nan")
            if self.model_bos:  # without BOS, position 0 is the text's first token as the model sees text:
                out.append(  # nothing to check, so no check (it held by construction before)
                    at_least(
                        "position_0_is_bos", share, 1.0,
                        f"share of the {self.n_texts} windows whose position 0 is the BOS token the model prepends to "
                        "every text; where it is not, the first-token sink is measured on an ordinary token",
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
    def value_weighted(self) -> bool:
        """Whether the result holds value-weighted first-token masses."""
        return self.weighted_first_token_mass is not None

    def sink_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """(sink, noop) bool [text, layer, head]: alpha_0 > eps, and of those the no-ops
        (`interp.analyses.sinks.measures.noop_sinks`); noop is all False without value weighting."""
        if not self.value_weighted:
            return self.alpha0 > self.config.eps, np.zeros(self.alpha0.shape, dtype=bool)
        return noop_sinks(
            self.alpha0, self.first_token_mass, self.weighted_first_token_mass, self.config.eps, self.config.noop_ratio
        )

    def noop_shares(self) -> dict[str, float]:
        """Percent of first-token sinks ((text, layer, head) with alpha_0 > eps) that are no-ops:
        "all" and per layer kind (NaN where there is no sink)."""
        sink, noop = self.sink_classes()
        kinds = np.asarray(self.layer_kinds())
        parts = {"all": np.ones(len(kinds), dtype=bool)} | {str(k): kinds == k for k in dict.fromkeys(kinds)}
        return {
            name: float(100.0 * noop[:, m].sum() / sink[:, m].sum()) if sink[:, m].any() else float("nan")
            for name, m in parts.items()
        }

    def head_sink_kinds(self) -> np.ndarray:
        """[layer, head] "active", "no-op" or "none": `noop_sinks` on the text means of alpha_0 and
        the two first-token masses ("active" for every sink without value weighting)."""
        if not self.value_weighted:
            sink, noop = self.alpha0.mean(0) > self.config.eps, np.zeros(self.alpha0.shape[1:], dtype=bool)
        else:
            sink, noop = noop_sinks(
                self.alpha0.mean(0), self.first_token_mass.mean(0), self.weighted_first_token_mass.mean(0),
                self.config.eps, self.config.noop_ratio,
            )  # fmt: skip
        return np.where(noop, "no-op", np.where(sink, "active", "none"))

    @property
    def sink_rate(self) -> float:
        """Gu et al. sink rate at position 0 in percent, over every (text, layer, head)."""
        return sink_rate(self.alpha0, self.config.eps)

    def layer_sink_rates(self) -> pd.DataFrame:
        """Per layer: its kind (global / windowed W), window, sink rate (percent of (text, head) with
        alpha_0 > eps), mean alpha_0 and mean first-token mass; with value weighting also
        noop_share_pct (percent of the layer's sinks that are no-ops, NaN without sinks)."""
        table = pd.DataFrame(
            {
                "layer": list(self.layers),
                "kind": list(self.layer_kinds()),
                "window": pd.array(list(self.layer_windows()), dtype="Int64"),
                "sink_rate_pct": [sink_rate(self.alpha0[:, i], self.config.eps) for i in range(len(self.layers))],
                "alpha0": self.alpha0.mean(axis=(0, 2)),
                "first_token_mass": self.first_token_mass.mean(axis=(0, 2)),
            }
        )
        if self.value_weighted:
            sink, noop = self.sink_classes()
            n_sink = sink.sum(axis=(0, 2))
            table["noop_share_pct"] = np.where(
                n_sink > 0, 100.0 * noop.sum(axis=(0, 2)) / np.maximum(n_sink, 1), np.nan
            )
        return table

    def position_sink_rate(self) -> np.ndarray:
        """[length] percent of (text, layer, head) with alpha_j > eps, per position j."""
        return 100.0 * self.position_count / (self.n_texts * len(self.layers) * self.n_heads)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (layer, head), averaged over texts (this is heads.csv).

        Columns: layer, head, first_token_mass, alpha0, sink_rate_pct (percent of texts with
        alpha_0 > eps), n_hidden_sinks (hidden sinks summed over texts), hidden_per_text,
        hidden_mass (mean over texts of the summed recv_mean of the head's hidden sinks); with
        value weighting also weighted_first_token_mass, value_ratio (weighted / first-token mass,
        of the text means), noop_rate_pct (percent of texts where the head is a no-op sink) and
        sink_kind (`head_sink_kinds`).
        """
        n_layers = len(self.layers)
        hidden = self.hits[self.hit_hidden]
        counts = np.zeros((n_layers, self.n_heads), dtype=np.int64)
        mass = np.zeros((n_layers, self.n_heads))
        index = {layer: i for i, layer in enumerate(self.layers)}
        for (_text, layer, head, _), a in zip(hidden, self.hit_alpha[self.hit_hidden]):
            counts[index[int(layer)], head] += 1
            mass[index[int(layer)], head] += a
        li, hi = grid_cells(n_layers, self.n_heads)
        columns = {
            "layer": np.asarray(self.layers)[li],
            "head": hi,
            "first_token_mass": self.first_token_mass.mean(0)[li, hi],
            "alpha0": self.alpha0.mean(0)[li, hi],
            "sink_rate_pct": 100.0 * (self.alpha0 > self.config.eps).mean(0)[li, hi],
            "n_hidden_sinks": counts[li, hi],
            "hidden_per_text": counts[li, hi] / self.n_texts,
            "hidden_mass": mass[li, hi] / self.n_texts,
        }
        if self.value_weighted:
            weighted = self.weighted_first_token_mass.mean(0)
            columns["weighted_first_token_mass"] = weighted[li, hi]
            columns["value_ratio"] = value_ratio(weighted, self.first_token_mass.mean(0))[li, hi]
            columns["noop_rate_pct"] = 100.0 * self.sink_classes()[1].mean(0)[li, hi]
            columns["sink_kind"] = self.head_sink_kinds()[li, hi]
        return pd.DataFrame(columns)

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
            **self._value_summary(),
            "checks": as_records(self.checks),
        }

    def _value_summary(self) -> dict:
        """The value-weighted headline: how many first-token sinks are no-ops (empty without weighting)."""
        if not self.value_weighted:
            return {}
        shares = self.noop_shares()
        kinds = self.head_sink_kinds()
        return {
            "mean_weighted_first_token_mass": round(float(self.weighted_first_token_mass.mean()), 4),
            "noop_ratio": self.config.noop_ratio,
            "noop_share_pct": round(shares.pop("all"), 2),
            "noop_share_pct_by_kind": {k: round(v, 2) for k, v in shares.items()},
            "sink_heads": {"active": int((kinds == "active").sum()), "no-op": int((kinds == "no-op").sum())},
        }

"""The atlas result: profiles, kinds, the KV-head policy and the causal comparison of selectors.

`combine` averages the runner's per-text records into an `AtlasResult`; `with_causal` adds the
causal check (per condition: the selector's windowed KV heads, loss changes over all tokens and
over the key tokens, needle recall) and `with_scores` each selector's [layer, kv_head] scores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from interp.analyses.atlas.causal import best_savings, frontier
from interp.analyses.atlas.config import AtlasConfig
from interp.analyses.atlas.policy import decision_units, duo_attention_heads, kv_saved, query_heads
from interp.analyses.atlas.profiles import KINDS, classify, metric_names, position_bins
from interp.analyses.checks import Check, as_records, at_least, at_most, holds, not_tested
from interp.analyses.ranking import grid_cells
from interp.errors import InterpError

__all__ = ["AtlasResult", "combine", "with_causal", "with_scores"]

_CAUSAL_COLUMNS = ["selector", "seed", "budget", "n_kv_heads", "kv_saved", "delta_loss", "delta_key_loss", "recall"]


@dataclass(frozen=True)
class AtlasResult:
    """The atlas of one model: profiles per head and position bin, kinds, the policy, the causal check.

    Attributes:
        model: model name.
        config: the `AtlasConfig`.
        layers: the profiled layers.
        n_heads: query heads per layer.
        kv_map: kv head of each query head.
        layer_windows: the model's own sliding window per profiled layer (None: global).
        bins: [n_bins, 2] first and last query position of each bin.
        metrics: metric names (`metric_names`).
        profiles: [layer, head, metric, bin] means over the texts' rows in the bin.
        concentration: [layer, head] mean over texts.
        n_texts: windows profiled.
        token_counts: tokens of each profiled window.
        causal: one row per condition (selector, seed, budget, n_kv_heads, kv_saved, delta_loss,
            delta_key_loss, recall), empty without the check.
        frontier: one row per (selector, budget) with 95% intervals (`causal.condition_row`).
        scores: selector -> [layer, kv_head] scores (random: seed 0's draw).
        base_loss, base_key_loss: the unedited model's loss (nats/token) over all and over the key tokens.
        base_recall: needle recall without edits (NaN without needles).
        n_key_tokens: key tokens among the scored tokens of the held-out windows.
        n_loss_tokens: scored tokens of the held-out windows.
    """

    model: str
    config: AtlasConfig
    layers: tuple[int, ...]
    n_heads: int
    kv_map: tuple[int, ...]
    layer_windows: tuple[Optional[int], ...]
    bins: np.ndarray
    metrics: tuple[str, ...]
    profiles: np.ndarray
    concentration: np.ndarray
    n_texts: int
    token_counts: tuple[int, ...]
    causal: tuple[dict, ...] = ()
    frontier_rows: tuple[dict, ...] = ()
    scores: dict = field(default_factory=dict)
    base_loss: float = float("nan")
    base_key_loss: float = float("nan")
    base_recall: float = float("nan")
    n_key_tokens: int = 0
    n_loss_tokens: int = 0

    @property
    def n_kv_heads(self) -> int:
        return max(self.kv_map) + 1

    def full(self) -> dict[str, np.ndarray]:
        """Every metric at the full length (the last position bin), [layer, head]."""
        return {m: self.profiles[:, :, i, -1] for i, m in enumerate(self.metrics)}

    @property
    def kinds(self) -> np.ndarray:
        """[layer, head] kind of each head (`classify`)."""
        return classify(self.full(), self.config)

    @property
    def units(self) -> list[tuple[int, int]]:
        """The decision units: (layer index, kv head) of the layers the model does not window (`decision_units`)."""
        return decision_units(len(self.layers), self.n_kv_heads, self.layer_windows, self.config.length)

    def distant_kv(self) -> np.ndarray:
        """[layer, kv_head] the max distant mass at the policy window over each KV head's query heads."""
        distant = self.full()[f"distant_{self.config.policy_window}"]
        return np.stack([distant[:, query_heads(self.kv_map, g)].max(1) for g in range(self.n_kv_heads)], 1)

    def saved(self, windowed: Sequence[tuple[int, int]]) -> float:
        """KV cache share saved at the config's length by windowing ``windowed`` units (`kv_saved`)."""
        cfg = self.config
        return kv_saved(windowed, len(self.layers), self.n_kv_heads, cfg.length, cfg.policy_window, cfg.sinks,
                        self.layer_windows)  # fmt: skip

    def policy(self) -> dict[str, Any]:
        """policy.json: the decision units whose query heads all have distant mass <= distant_max are windowed."""
        cfg, distant = self.config, self.distant_kv()
        windowed = [u for u in self.units if distant[u] <= cfg.distant_max]
        full = [u for u in self.units if u not in set(windowed)]
        return {
            "model": self.model, "length": cfg.length, "window": cfg.policy_window, "sinks": cfg.sinks,
            "distant_max": cfg.distant_max, "selector": "profile", "unit": "kv_head",
            "full": [[self.layers[i], g] for i, g in full], "windowed": [[self.layers[i], g] for i, g in windowed],
            "kv_saved": round(self.saved(windowed), 6), "n_layers": len(self.layers), "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads, "layer_windows": list(self.layer_windows),
        }  # fmt: skip

    def duo_attention(self) -> np.ndarray:
        """full_attention_heads.tsv of the policy, [layer, kv_head] (`duo_attention_heads`)."""
        index = {layer: i for i, layer in enumerate(self.layers)}
        windowed = [(index[a], g) for a, g in self.policy()["windowed"]]
        return duo_attention_heads(windowed, len(self.layers), self.n_kv_heads)

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: one row per query head (layer, head): every metric at the full length, concentration, kind."""
        full, kinds = self.full(), self.kinds
        rows = []
        for i, layer in enumerate(self.layers):
            for h in range(self.n_heads):
                row: dict[str, Any] = {"layer": layer, "head": h, "kv_head": self.kv_map[h],
                                       "layer_window": self.layer_windows[i]}  # fmt: skip
                row |= {m: float(full[m][i, h]) for m in self.metrics}
                row |= {"concentration": float(self.concentration[i, h]), "kind": kinds[i, h]}
                rows.append(row)
        return pd.DataFrame(rows)

    def kv_heads_dataframe(self) -> pd.DataFrame:
        """kv_heads.csv: layer, kv_head, query_heads, unit (decided by the policy), each selector's score, decision."""
        policy = self.policy()
        windowed = {tuple(p) for p in policy["windowed"]}
        units = set(self.units)
        scores = {"profile": self.distant_kv()} | dict(self.scores)
        rows = []
        for i, layer in enumerate(self.layers):
            for g in range(self.n_kv_heads):
                row: dict[str, Any] = {"layer": layer, "kv_head": g,
                                       "query_heads": " ".join(map(str, query_heads(self.kv_map, g))),
                                       "unit": (i, g) in units}  # fmt: skip
                row |= {f"score_{name}": float(s[i, g]) for name, s in scores.items()}
                row["decision"] = (
                    "windowed" if (layer, g) in windowed else ("full" if (i, g) in units else "model window")
                )
                rows.append(row)
        return pd.DataFrame(rows)

    def profiles_dataframe(self) -> pd.DataFrame:
        """profiles.csv: layer, head, bin, pos_lo, pos_hi, metric, value (long format)."""
        n_layers, n_heads, n_metrics, n_bins = self.profiles.shape
        li, hi, mi, bi = grid_cells(n_layers, n_heads, n_metrics, n_bins)
        return pd.DataFrame({
            "layer": np.asarray(self.layers)[li], "head": hi, "bin": bi,
            "pos_lo": self.bins[bi, 0], "pos_hi": self.bins[bi, 1],
            "metric": np.asarray(self.metrics)[mi], "value": self.profiles.reshape(-1),
        })  # fmt: skip

    def causal_dataframe(self) -> pd.DataFrame:
        """causal.csv: selector, seed, budget, n_kv_heads, kv_saved, delta_loss, delta_key_loss, recall."""
        return pd.DataFrame(list(self.causal), columns=_CAUSAL_COLUMNS)

    def frontier_dataframe(self) -> pd.DataFrame:
        """frontier.csv: per (selector, budget) the mean KV saving, loss changes and recall with 95% intervals."""
        return frontier(self.causal_dataframe(), self.frontier_rows)

    def best_savings(self) -> dict[str, float]:
        """Per selector, the largest KV saving within the key-token tolerance and the recall floor (`best_savings`)."""
        cfg = self.config
        rows = self.frontier_dataframe()
        rows = rows[rows["selector"] != "policy-file"] if not rows.empty else rows
        return best_savings(rows, cfg.loss_tolerance, cfg.recall_min, self.base_recall) if not rows.empty else {}

    @property
    def checks(self) -> tuple[Check, ...]:
        """The finding's preconditions: every window reached --length, every profile is finite, the
        held-out windows have key tokens, and the profile's KV heads beat random ones."""
        cfg = self.config
        out = [
            at_least("texts_at_length", float(min(self.token_counts, default=0)), float(cfg.length),
                     f"every profiled window holds --length {cfg.length} tokens (shorter texts would end the profiles early)"),
            holds("profiles_finite", bool(np.isfinite(self.profiles).all()),
                  "every head has a value in every position bin (a NaN means no query row reached it)"),
        ]  # fmt: skip
        if self.causal:
            out.append(at_least("key_tokens", float(self.n_key_tokens), 10.0,
                                f"key tokens (LongPPL) among the {self.n_loss_tokens} scored tokens: fewer than 10 "
                                "make the key-token loss change noise"))  # fmt: skip
        rows = self.frontier_dataframe() if self.causal else pd.DataFrame()
        if not rows.empty and {"profile", "random"} <= set(rows["selector"]):
            p = rows.loc[rows["selector"] == "profile", "delta_key_loss"].mean()
            q = rows.loc[rows["selector"] == "random", "delta_key_loss"].mean()
            check = at_most("profile_below_random", float(p - q), 0.0,
                            "mean key-token loss change of the profile's KV heads minus that of as many random KV "
                            "heads over the budgets (above 0: distant mass does not pick the heads that can be windowed)")  # fmt: skip
            if not np.isfinite(p - q):
                check = not_tested(
                    check,
                    "no key tokens in the held-out windows: give longer or more windows (--length, --causal-texts)",
                )
            out.append(check)
        return tuple(out)

    def summary(self) -> dict[str, Any]:
        """JSON-able: kinds count, policy, best KV saving per selector, thresholds, checks."""
        kinds, policy, cfg = self.kinds, self.policy(), self.config
        nan = lambda x: None if math.isnan(x) else x  # noqa: E731
        return {
            "n_texts": self.n_texts, "length": cfg.length, "kinds": {k: int((kinds == k).sum()) for k in KINDS},
            "thresholds": {"sink_min": cfg.sink_min, "prev_min": cfg.prev_min, "distant_max": cfg.distant_max,
                           "window": cfg.policy_window, "sinks": cfg.sinks, "concentration_top": 0.01,
                           "key_context": cfg.key_window, "key_margin": cfg.key_margin, "key_max_loss": cfg.key_max_loss,
                           "loss_tolerance": cfg.loss_tolerance, "recall_min": cfg.recall_min},
            "kv_units": len(self.units), "windowed_kv_heads": len(policy["windowed"]), "kv_saved": policy["kv_saved"],
            "base_loss": nan(self.base_loss), "base_key_loss": nan(self.base_key_loss),
            "base_recall": nan(self.base_recall), "n_key_tokens": self.n_key_tokens, "n_loss_tokens": self.n_loss_tokens,
            "best_kv_saved": {k: nan(v) for k, v in self.best_savings().items()}, "checks": as_records(self.checks),
        }  # fmt: skip


def combine(
    model: str,
    config: AtlasConfig,
    layers: Sequence[int],
    n_heads: int,
    kv_map: Sequence[int],
    layer_windows: Sequence[Optional[int]],
    records: Sequence[Mapping[str, Any]],
) -> AtlasResult:
    """Average the per-text records of the runner into an `AtlasResult`.

    Args:
        records: one per text: ``{"tokens": n, "layers": [reduce_layer record per layer]}``.

    Raises:
        InterpError: no records.
    """
    if not records:
        raise InterpError("no texts were profiled: pass texts of at least --length tokens")
    metrics = metric_names(config.windows)
    bins = position_bins(config.length, config.n_bins)
    n_bins = int(bins.max()) + 1
    sums = np.zeros((len(layers), n_heads, len(metrics), n_bins))
    counts = np.zeros_like(sums)
    conc = np.zeros((len(layers), n_heads))
    for rec in records:
        for i, layer_rec in enumerate(rec["layers"]):
            for m, name in enumerate(metrics):
                if name not in layer_rec["sums"]:  # a resume log from before value weighting: NaN profile
                    continue
                sums[i, :, m] += np.asarray(layer_rec["sums"][name])
                counts[i, :, m] += np.asarray(layer_rec["counts"][name])
            conc[i] += np.asarray(layer_rec["concentration"])
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    positions = np.arange(config.length)
    edges = np.array([[positions[bins == b].min(), positions[bins == b].max()] for b in range(n_bins)])
    return AtlasResult(
        model=model, config=config, layers=tuple(layers), n_heads=n_heads, kv_map=tuple(kv_map),
        layer_windows=tuple(layer_windows), bins=edges, metrics=metrics, profiles=profiles,
        concentration=conc / len(records), n_texts=len(records), token_counts=tuple(int(r["tokens"]) for r in records),
    )  # fmt: skip


def with_scores(result: AtlasResult, scores: Mapping[str, np.ndarray]) -> AtlasResult:
    """The result with each selector's [layer, kv_head] scores (kv_heads.csv)."""
    return dataclasses.replace(result, scores={k: np.asarray(v, dtype=np.float64) for k, v in scores.items()})


def with_causal(result: AtlasResult, rows: Sequence[Mapping[str, Any]], frontier_rows: Sequence[Mapping[str, Any]],
                base: Mapping[str, float]) -> AtlasResult:  # fmt: skip
    """The result with the causal check (see `AtlasResult.causal`); ``base``: loss, key_loss, recall,
    n_key_tokens, n_loss_tokens of the unedited model."""
    return dataclasses.replace(
        result, causal=tuple(dict(r) for r in rows), frontier_rows=tuple(dict(r) for r in frontier_rows),
        base_loss=float(base["loss"]), base_key_loss=float(base["key_loss"]), base_recall=float(base["recall"]),
        n_key_tokens=int(base["n_key_tokens"]), n_loss_tokens=int(base["n_loss_tokens"]),
    )  # fmt: skip

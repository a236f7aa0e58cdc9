"""The head atlas: how every head of a model uses a long context, and which heads a KV cache may window.

Per head and per log-spaced bin of query positions, averaged over texts, the row statistics of
`interp.kernels.attention_stats` (docs/METRICS.md, section "Head atlas"): mass on the first
token, on the first ``sinks`` tokens, entropy, mean distance, WAAD, top-1 mass, self mass a_ii,
previous-token mass a_{i,i-1}, recent mass within W tokens and distant mass beyond the sinks and
the last W tokens for each W of ``windows``; per head, the concentration of received attention
(share of all attention received that goes to the top 1% of keys).

From the statistics at the full length (the last position bin) each head gets a ``kind`` (sink,
previous-token, local, global; thresholds in `AtlasConfig`) and the KV-cache policy: the heads
whose distant mass at the policy window is at most ``distant_max`` keep only their first
``sinks`` keys and their last ``window`` keys (StreamingLLM per head, as DuoAttention and
RazorAttention split heads into streaming and full ones); the others keep the full cache.

Pure: the runner (`interp.experiments.atlas`) drives the model and hands this module the
per-text sums (`reduce_layer`) and the causal rows (loss change and needle recall with windowed
heads); `combine` averages them into an `AtlasResult`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyses._config import Config
from interp.analyses.checks import Check, as_records, at_least, at_most, holds
from interp.errors import InterpError

__all__ = [
    "AtlasConfig",
    "AtlasResult",
    "KINDS",
    "metric_names",
    "position_bins",
    "reduce_layer",
    "concentration",
    "combine",
    "classify",
    "select_heads",
    "kv_saved",
    "parse_ints",
    "with_causal",
]

KINDS = ("sink", "previous-token", "local", "global")
"""Head kinds, in the order they are tested (docs/METRICS.md#head-atlas)."""

_ROW_METRICS = ("first", "sink", "entropy", "dist", "waad", "top1p", "self_mass", "prev")
_PREV_WINDOW = 2  # recent mass within 2 positions = a_ii + a_{i,i-1}: previous-token mass = recent_2 - self_mass


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """``"64,256,1024"`` -> (64, 256, 1024); a bad list is one `InterpError` naming ``flag``."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InterpError(f"{flag} takes comma-separated integers such as 64,256,1024, got {text!r}") from None
    if not values:
        raise InterpError(f"{flag} is empty: give at least one integer")
    return values


@dataclass(frozen=True)
class AtlasConfig(Config):
    """What the atlas measures.

    Attributes:
        texts: texts to analyse (None: the shipped corpus, stdlib docstring prose and the sink
            texts, about 36k tokens on SmolLM2's tokenizer). They are joined and cut into
            windows of ``length`` tokens; the last ``causal_texts`` windows are held out for
            the causal check.
        length: tokens per window (every head is profiled up to this position).
        max_texts: profile at most this many windows (None: all but the held-out ones).
        sinks: S, the first tokens every windowed head keeps (StreamingLLM keeps 4).
        windows: the W of the recent and distant masses.
        window: the W of the policy (one of ``windows``; default the largest below ``length``).
        n_bins: log-spaced query-position bins of the profiles.
        sink_min: a head whose mass on the first S tokens is at least this is a sink head.
        prev_min: a head whose mass on the previous token is at least this is a previous-token head.
        distant_max: a head whose distant mass at the policy window is at most this may be
            windowed (local, or sink / previous-token); above it, global.
        causal_texts: held-out windows for the causal check (0: no causal check).
        budgets: shares of heads windowed in the sweep.
        seeds: random head sets per budget.
        loss_tolerance: the loss change (nats/token) the summary calls harmless.
        loss_tokens: the causal check's loss is the mean NLL of the last this many tokens of each
            held-out window (the positions farthest from the sinks, where a window loses most).
        needles: needle recall at the full length in the causal check (needles from the retrieval
            machinery's default file; 0: none).
        policy_file: a policy.json (from an earlier `interp atlas` on this model) whose windowed
            heads the causal check's ``policy.json`` condition uses instead of this run's.
        layers: layers to profile (None: all; the policy and the causal check need all).
        backend: kernel backend.
    """

    texts: Optional[tuple[str, ...]] = None
    length: int = 8192
    max_texts: Optional[int] = None
    sinks: int = 4  # StreamingLLM (Xiao et al. 2024) keeps 4 initial tokens
    windows: tuple[int, ...] = (64, 256, 1024)
    window: Optional[int] = None
    n_bins: int = 16
    sink_min: float = 0.5  # half of the row's mass on the first S tokens
    prev_min: float = (
        0.5  # half of the row's mass on i - 1 (TransformerLens's previous-token score reads the same mass)
    )
    distant_max: float = 0.05  # at most 5% of the mass beyond the sinks and the window: streaming-compatible
    causal_texts: int = 1
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    seeds: int = 3
    loss_tolerance: float = 0.05  # nats/token (issue 22)
    loss_tokens: int = 1024  # the loss is the mean over the last this many positions of each held-out window
    needles: int = 2
    layers: Optional[tuple[int, ...]] = None
    backend: str = "auto"
    policy_file: Optional[str] = None  # a policy.json whose heads the causal check windows (default: this run's policy)

    def validate(self) -> None:
        if self.texts is not None and not any(t.strip() for t in self.texts):
            raise InterpError(
                "no texts to analyse: pass at least one non-empty text (or omit texts for the shipped corpus)"
            )
        if self.length < 2:
            raise InterpError(f"length must be at least 2 tokens, got {self.length}")
        if self.sinks < 0:
            raise InterpError(f"--sinks must be >= 0, got {self.sinks}")
        if self.sinks >= self.length:
            raise InterpError(f"--sinks {self.sinks} must be below --length {self.length}")
        if not self.windows or len(set(self.windows)) != len(self.windows):
            raise InterpError(f"--windows must be distinct integers, got {list(self.windows)}")
        for w in self.windows:
            if not 1 <= w < self.length:
                raise InterpError(
                    f"window {w} must lie in 1..{self.length - 1} (below --length {self.length}): lower it or raise --length"
                )
        if self.window is not None and self.window not in self.windows:
            raise InterpError(f"the policy window {self.window} must be one of --windows {list(self.windows)}")
        if self.n_bins < 1:
            raise InterpError(f"--bins must be >= 1, got {self.n_bins}")
        for name in ("sink_min", "prev_min", "distant_max"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InterpError(f"{name} must lie in [0, 1], got {value}")
        if self.loss_tokens < 1:
            raise InterpError(f"loss_tokens must be >= 1, got {self.loss_tokens}")
        if self.causal_texts < 0 or self.seeds < 0 or self.needles < 0:
            raise InterpError("causal_texts, seeds and needles must be >= 0")
        if self.max_texts is not None and self.max_texts < 1:
            raise InterpError(f"--max-texts must be >= 1, got {self.max_texts}")
        for b in self.budgets:
            if not 0.0 < b < 1.0:
                raise InterpError(f"budgets are shares of heads in (0, 1), got {b}")

    @property
    def policy_window(self) -> int:
        """The W of the policy: ``window``, else the largest of ``windows``."""
        return self.window if self.window is not None else max(self.windows)

    @property
    def kernel_windows(self) -> tuple[int, ...]:
        """The ``recent_windows`` passed to the kernel: ``windows`` plus 2 (for the previous-token mass)."""
        return tuple(sorted(set(self.windows) | {_PREV_WINDOW}))


def metric_names(windows: Sequence[int]) -> tuple[str, ...]:
    """The profile metrics, in order: the row metrics, then recent_<w> and distant_<w> per window."""
    return _ROW_METRICS + tuple(f"recent_{w}" for w in windows) + tuple(f"distant_{w}" for w in windows)


def position_bins(length: int, n_bins: int) -> np.ndarray:
    """Log-spaced bins of query positions 0..length-1: ``bin_of[p]`` for each position.

    Position p (counted from the first real token) falls in bin b when
    ``edges[b] <= p + 1 < edges[b + 1]`` with ``edges`` the distinct rounded values of
    geomspace(1, length, n_bins + 1) (the last position joins the last bin); duplicate
    edges at short lengths merge bins, so there can be fewer than ``n_bins``.

    Returns:
        int64 [length]: the bin of each position, 0..n-1, non-decreasing, every bin non-empty.
    """
    edges = np.unique(np.round(np.geomspace(1, length, n_bins + 1)).astype(np.int64))
    bins = np.searchsorted(edges, np.arange(1, length + 1), side="right") - 1
    bins = np.clip(bins, 0, len(edges) - 2 if len(edges) > 1 else 0)
    _, bins = np.unique(bins, return_inverse=True)  # renumber so that every bin is non-empty
    return bins.astype(np.int64)


def concentration(recv: Float[Tensor, "head key_pos"], share: float = 0.01) -> Float[Tensor, " head"]:
    """Share of the attention received by the top ``share`` of keys (at least one key).

    Args:
        recv: attention received per key (sum over query rows), NaN on padded keys.

    Returns:
        [head] in (0, 1]: sum of the ceil(share x n_keys) largest recv / sum of recv.
    """
    real = recv.nan_to_num(0.0).double()
    n_top = max(1, math.ceil(share * int(torch.isfinite(recv[0]).sum())))
    top = real.topk(n_top, dim=-1).values.sum(-1)
    return (top / real.sum(-1)).float()


def reduce_layer(
    rows: Mapping[str, Float[Tensor, "head n_rows"]],
    bins: np.ndarray,
    n_bins: int,
    recv: Optional[Float[Tensor, "head key_pos"]],
) -> dict[str, Any]:
    """One layer of one text: per-bin sums of every row metric, the row count per bin, the concentration.

    Args:
        rows: metric name -> [head, n_rows] per query row (positions 0..n_rows-1 from the first
            real token; NaN rows are skipped).
        bins: the bin of each position (`position_bins`).
        n_bins: number of bins.
        recv: received attention [head, key_pos] (None: no concentration).

    Returns:
        JSON-able: ``sums`` ``{metric: [head][bin]}``, ``counts`` ``{metric: [head][bin]}`` (rows with
        a finite value), ``concentration`` [head] or None.
    """
    index = torch.as_tensor(bins)
    sums, counts = {}, {}
    for name, values in rows.items():
        values = values.double().cpu()
        ok = torch.isfinite(values)
        s = torch.zeros(values.shape[0], n_bins, dtype=torch.float64).index_add_(1, index, values.nan_to_num(0.0))
        c = torch.zeros(values.shape[0], n_bins, dtype=torch.float64).index_add_(1, index, ok.double())
        sums[name], counts[name] = s.tolist(), c.tolist()
    conc = concentration(recv).tolist() if recv is not None else None
    return {"sums": sums, "counts": counts, "concentration": conc}


def classify(full: Mapping[str, np.ndarray], config: AtlasConfig) -> np.ndarray:
    """The kind of each head from its statistics at the full length (arrays [layer, head]).

    Tested in order: sink (mass on the first S tokens >= sink_min), previous-token (mass on
    i - 1 >= prev_min), local (distant mass at the policy window <= distant_max), else global.
    """
    W = config.policy_window
    kind = np.full(full["sink"].shape, "global", dtype=object)
    kind[full[f"distant_{W}"] <= config.distant_max] = "local"
    kind[full["prev"] >= config.prev_min] = "previous-token"
    kind[full["sink"] >= config.sink_min] = "sink"
    return kind


def select_heads(distant: np.ndarray, n: int, how: str, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` heads (layer index, head) of a [layer, head] grid of distant masses.

    how: "policy" (least distant mass first), "distant" (most first) or "random" (seeded).
    Ties go to the lower (layer, head).
    """
    flat = distant.reshape(-1)
    order = np.arange(flat.size)
    if how == "policy":
        order = np.lexsort((order, flat))
    elif how == "distant":
        order = np.lexsort((order, -flat))
    elif how == "random":
        order = np.random.default_rng(seed).permutation(flat.size)
    else:
        raise InterpError(f"unknown head selection {how!r}: policy, distant or random")
    n_heads = distant.shape[1]
    return sorted((int(i) // n_heads, int(i) % n_heads) for i in order[:n])


def kv_saved(
    windowed: Sequence[tuple[int, int]],
    n_layers: int,
    kv_map: Sequence[int],
    length: int,
    window: int,
    sinks: int,
    layer_windows: Sequence[Optional[int]],
) -> float:
    """Share of the KV cache at ``length`` tokens saved by windowing ``windowed`` heads.

    The cache is held per kv head: a kv head keeps only ``sinks + window`` keys when every query
    head reading it is windowed (under GQA one full query head keeps the whole kv head); a layer
    the model already windows (``layer_windows``) holds min(length, its window) keys either way.

    Args:
        windowed: (layer index, head) pairs.
        kv_map: kv head of each query head.
    """
    chosen = set(windowed)
    n_kv = max(kv_map) + 1
    full = kept = 0.0
    for layer in range(n_layers):
        own = layer_windows[layer]
        base = float(min(length, own)) if own else float(length)
        for kv in range(n_kv):
            heads = [h for h, k in enumerate(kv_map) if k == kv]
            full += base
            kept += min(base, float(sinks + window)) if all((layer, h) in chosen for h in heads) else base
    return 1.0 - kept / full if full else 0.0


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
        causal: rows of the causal check (condition, seed, budget, n_heads, kv_saved,
            delta_loss, recall), empty without one.
        base_loss: loss (nats/token) of the held-out windows without edits (NaN without the check).
        base_recall: needle recall without edits (NaN without needles).
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
    base_loss: float = float("nan")
    base_recall: float = float("nan")
    extras: dict = field(default_factory=dict)

    def full(self) -> dict[str, np.ndarray]:
        """Every metric at the full length (the last position bin), [layer, head]."""
        return {m: self.profiles[:, :, i, -1] for i, m in enumerate(self.metrics)}

    @property
    def kinds(self) -> np.ndarray:
        """[layer, head] kind of each head (`classify`)."""
        return classify(self.full(), self.config)

    def policy(self) -> dict[str, Any]:
        """The KV-cache policy at the policy window: ``{"window", "sinks", "full", "windowed", "kv_saved", ...}``."""
        cfg, W = self.config, self.config.policy_window
        distant = self.full()[f"distant_{W}"]
        windowed = [
            (i, h) for i in range(len(self.layers)) for h in range(self.n_heads) if distant[i, h] <= cfg.distant_max
        ]
        full = [(i, h) for i in range(len(self.layers)) for h in range(self.n_heads) if (i, h) not in set(windowed)]
        saved = kv_saved(windowed, len(self.layers), self.kv_map, cfg.length, W, cfg.sinks, self.layer_windows)
        return {
            "model": self.model,
            "length": cfg.length,
            "window": W,
            "sinks": cfg.sinks,
            "distant_max": cfg.distant_max,
            "full": [[self.layers[i], h] for i, h in full],
            "windowed": [[self.layers[i], h] for i, h in windowed],
            "kv_saved": round(saved, 6),
            "n_layers": len(self.layers),
            "n_heads": self.n_heads,
        }

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: one row per (layer, head): every metric at the full length, concentration, kind."""
        full, kinds = self.full(), self.kinds
        rows = []
        for i, layer in enumerate(self.layers):
            for h in range(self.n_heads):
                row: dict[str, Any] = {
                    "layer": layer,
                    "head": h,
                    "kv_head": self.kv_map[h],
                    "layer_window": self.layer_windows[i],
                }
                row |= {m: float(full[m][i, h]) for m in self.metrics}
                row |= {"concentration": float(self.concentration[i, h]), "kind": kinds[i, h]}
                rows.append(row)
        return pd.DataFrame(rows)

    def profiles_dataframe(self) -> pd.DataFrame:
        """profiles.csv: layer, head, bin, pos_lo, pos_hi, metric, value (long format)."""
        n_layers, n_heads, n_metrics, n_bins = self.profiles.shape
        li, hi, mi, bi = np.meshgrid(
            np.arange(n_layers), np.arange(n_heads), np.arange(n_metrics), np.arange(n_bins), indexing="ij"
        )
        return pd.DataFrame({
            "layer": np.asarray(self.layers)[li.reshape(-1)],
            "head": hi.reshape(-1),
            "bin": bi.reshape(-1),
            "pos_lo": self.bins[bi.reshape(-1), 0],
            "pos_hi": self.bins[bi.reshape(-1), 1],
            "metric": np.asarray(self.metrics)[mi.reshape(-1)],
            "value": self.profiles.reshape(-1),
        })  # fmt: skip

    def causal_dataframe(self) -> pd.DataFrame:
        """causal.csv: condition, seed, budget, n_heads, kv_saved, delta_loss, recall."""
        columns = ["condition", "seed", "budget", "n_heads", "kv_saved", "delta_loss", "recall"]
        return pd.DataFrame(list(self.causal), columns=columns)

    def windowable_share(self) -> float:
        """Largest budget of the policy's heads whose loss change stays under the tolerance (0 when none; NaN without the check)."""
        rows = [r for r in self.causal if r["condition"] in ("policy", "policy.json")]
        if not rows:
            return float("nan")
        ok = [r["budget"] for r in rows if r["delta_loss"] < self.config.loss_tolerance]
        return float(max(ok, default=0.0))

    @property
    def checks(self) -> tuple[Check, ...]:
        """The finding's preconditions: every window reached --length, every profile is finite, the
        policy's heads beat random ones in the causal check, and the policy's budget is met."""
        cfg = self.config
        out = [
            at_least("texts_at_length", float(min(self.token_counts, default=0)), float(cfg.length),
                     f"every profiled window holds --length {cfg.length} tokens (shorter texts would end the profiles early)"),
            holds("profiles_finite", bool(np.isfinite(self.profiles).all()),
                  "every head has a value in every position bin (a NaN means no query row reached it)"),
        ]  # fmt: skip
        policy = [r for r in self.causal if r["condition"] == "policy"]
        rand = [r for r in self.causal if r["condition"] == "random"]
        if policy and rand:
            p = np.mean([r["delta_loss"] for r in policy])
            q = np.mean([r["delta_loss"] for r in rand])
            out.append(at_most("policy_below_random", float(p - q), 0.0,
                               "mean loss change of the policy's heads minus that of as many random heads over the budgets "
                               "(above 0: distant mass does not pick the heads that can be windowed)"))  # fmt: skip
        exact = [r for r in self.causal if r["condition"] == "policy.json"]
        if exact:
            out.append(at_most("policy_budget_met", float(exact[0]["delta_loss"]), cfg.loss_tolerance,
                               f"loss change (nats/token) with the {exact[0]['n_heads']} heads of policy.json windowed "
                               "(above the tolerance: the policy's window loses what those heads read)"))  # fmt: skip
        return tuple(out)

    def summary(self) -> dict[str, Any]:
        """JSON-able: kinds count, policy, windowable share, thresholds, checks."""
        kinds = self.kinds
        policy = self.policy()
        return {
            "n_texts": self.n_texts,
            "length": self.config.length,
            "kinds": {k: int((kinds == k).sum()) for k in KINDS},
            "thresholds": {
                "sink_min": self.config.sink_min,
                "prev_min": self.config.prev_min,
                "distant_max": self.config.distant_max,
                "window": self.config.policy_window,
                "sinks": self.config.sinks,
                "concentration_top": 0.01,
            },  # fmt: skip
            "windowed_heads": len(policy["windowed"]),
            "kv_saved": policy["kv_saved"],
            "base_loss": None if math.isnan(self.base_loss) else self.base_loss,
            "base_recall": None if math.isnan(self.base_recall) else self.base_recall,
            "windowable_share": None if math.isnan(self.windowable_share()) else self.windowable_share(),
            "checks": as_records(self.checks),
        }


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


def with_causal(
    result: AtlasResult, rows: Sequence[Mapping[str, Any]], base_loss: float, base_recall: float
) -> AtlasResult:
    """The result with the causal check's rows (see `AtlasResult.causal`)."""
    return dataclasses.replace(
        result, causal=tuple(dict(r) for r in rows), base_loss=float(base_loss), base_recall=float(base_recall)
    )

"""KV heads as the decision units of a KV-cache head policy: selectors, budgets, savings, DuoAttention's format.

A KV cache shrinks per KV head: under grouped-query attention the query heads that read one KV
head share its keys, so a policy windows whole KV heads (as DuoAttention and kvpress do). The
decision units are the KV heads of the layers the model does not already window (SmolLM2: all
90; Gemma 3 270M: the one KV head of each of its 3 global layers). A windowed KV head keeps its
first S keys and its last W keys, S + W of T, so windowing a share s of a layer's KV heads saves
s (1 - (S + W) / T) of that layer's cache; a layer the model windows holds min(T, its window)
keys either way (`kv_saved`).

A selector ranks the units: each scores every unit, the units with the lowest scores are
windowed first (ties in (layer, kv head) order). `SELECTORS` is the table; an entry names the
measurements it needs (the runner provides them: ``profile`` distant mass, ``heads`` induction
and duplicate-token scores, ``retrieval`` scores, ``ablation`` loss changes) and turns them into
[layer, kv_head] scores. Adding a selector is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from interp.errors import InterpError

__all__ = [
    "Selector",
    "SELECTORS",
    "group_max",
    "decision_units",
    "select_units",
    "kv_saved",
    "query_heads",
    "duo_attention_heads",
    "windowed_from_duo",
    "windowed_from_json",
]

Unit = tuple[int, int]  # (layer index, kv head)


def group_max(scores: np.ndarray, kv_map: Sequence[int]) -> np.ndarray:
    """[layer, head] query-head scores -> [layer, kv_head]: each KV head scores the max of its query heads."""
    n_kv = max(kv_map) + 1
    kv = np.asarray(kv_map)
    return np.stack([scores[:, kv == g].max(axis=1) for g in range(n_kv)], axis=1)


@dataclass(frozen=True)
class Selector:
    """One way to rank KV heads for windowing (lowest score windowed first).

    Attributes:
        name: the ``--selectors`` word.
        needs: measurements the runner must provide (keys of the mapping ``score`` reads).
        score: (measurements, kv_map, seed) -> [layer, kv_head] scores.
        seeded: one draw per seed (``--seeds``).
        source: where the rule comes from (docs/METRICS.md#head-atlas).
    """

    name: str
    needs: tuple[str, ...]
    score: Callable[[Mapping[str, np.ndarray], Sequence[int], int], np.ndarray]
    seeded: bool = False
    source: str = ""


def _random(m: Mapping[str, np.ndarray], kv_map: Sequence[int], seed: int) -> np.ndarray:
    shape = (m["profile"].shape[0], max(kv_map) + 1)
    return np.random.default_rng(seed).random(shape)


SELECTORS: dict[str, Selector] = {
    s.name: s
    for s in (
        Selector("profile", ("profile",), lambda m, kv, s: group_max(m["profile"], kv),
                 source="the atlas: distant mass beyond the sinks and the policy window, max over the group"),
        Selector("razor", ("heads",), lambda m, kv, s: group_max(np.maximum(m["induction"], m["duplicate"]), kv),
                 source="RazorAttention (Tang et al. 2025): induction and echo (duplicate-token) scores on "
                        "repeated random tokens, max over the group"),
        Selector("retrieval", ("retrieval",), lambda m, kv, s: group_max(m["retrieval"], kv),
                 source="retrieval scores (Wu et al. 2024) from interp score retrieval's machinery, max over the group"),
        Selector("ablation", ("ablation",), lambda m, kv, s: m["ablation"],
                 source="each KV head windowed alone on a calibration window: its own loss change"),
        Selector("vnorm", ("profile",), lambda m, kv, s: group_max(m["vnorm"], kv),
                 source="the atlas's value-weighted distant mass (attention x ||W_O^h v_j||, Kobayashi et al. "
                        "2020; kvpress's ExpectedAttention scales by value norms), max over the group"),
        Selector("random", ("profile",), _random, seeded=True, source="uniform random order, one per seed"),
    )
}  # fmt: skip
"""The selectors by name (see `Selector`); `AtlasConfig.selectors` must name entries of it."""


def decision_units(n_layers: int, n_kv_heads: int, layer_windows: Sequence[Optional[int]], length: int) -> list[Unit]:
    """The KV heads a policy decides: every KV head of a layer the model does not window below ``length``."""
    return [
        (i, g)
        for i in range(n_layers)
        if layer_windows[i] is None or layer_windows[i] >= length
        for g in range(n_kv_heads)
    ]


def select_units(scores: np.ndarray, units: Sequence[Unit], n: int) -> list[Unit]:
    """The ``n`` units with the lowest scores ([layer, kv_head]; ties in (layer, kv head) order), sorted.

    Raises:
        InterpError: n beyond the units, or a unit without a finite score.
    """
    if not 0 <= n <= len(units):
        raise InterpError(f"cannot window {n} KV heads: the model has {len(units)} that are not already windowed")
    values = np.array([scores[i, g] for i, g in units], dtype=np.float64)
    if not np.isfinite(values).all():
        raise InterpError("a selector gave a KV head no score (NaN): measure every layer (drop --layers)")
    order = np.lexsort((np.arange(len(units)), values))
    return sorted(units[int(k)] for k in order[:n])


def kv_saved(
    windowed: Sequence[Unit],
    n_layers: int,
    n_kv_heads: int,
    length: int,
    window: int,
    sinks: int,
    layer_windows: Sequence[Optional[int]],
) -> float:
    """Share of the KV cache at ``length`` tokens saved by windowing the KV heads ``windowed``.

    Every KV head of a layer holds ``length`` keys, or min(length, w) in a layer the model
    windows at w; a windowed one holds min(that, sinks + window). Saved = 1 - kept / held.
    """
    chosen = set(windowed)
    held = kept = 0.0
    for i in range(n_layers):
        own = layer_windows[i]
        base = float(min(length, own)) if own else float(length)
        for g in range(n_kv_heads):
            held += base
            kept += min(base, float(sinks + window)) if (i, g) in chosen else base
    return 1.0 - kept / held if held else 0.0


def query_heads(kv_map: Sequence[int], kv_head: int) -> list[int]:
    """The query heads that read ``kv_head`` (HF ``repeat_kv`` order)."""
    return [h for h, g in enumerate(kv_map) if g == kv_head]


def duo_attention_heads(windowed: Sequence[Unit], n_layers: int, n_kv_heads: int) -> np.ndarray:
    """DuoAttention's full_attention_heads.tsv as an array [layer, kv_head]: 0 = windowed (streaming), 1 = full.

    KV heads the model already windows are written 1: the policy leaves them as the model runs them.
    """
    out = np.ones((n_layers, n_kv_heads))
    for i, g in windowed:
        out[i, g] = 0.0
    return out


def windowed_from_duo(
    gates: np.ndarray, units: Sequence[Unit], n_layers: int, n_kv_heads: int, where: str
) -> list[Unit]:
    """The decision units a DuoAttention TSV windows: gate values below 0.5 (ours are exactly 0 or 1).

    Raises:
        InterpError: a shape other than [n_layers, n_kv_heads], or a value outside [0, 1].
    """
    if gates.ndim == 1 and n_kv_heads == 1:
        gates = gates[:, None]
    if gates.shape != (n_layers, n_kv_heads):
        raise InterpError(
            f"{where} holds {'x'.join(map(str, gates.shape))} values, but the model has {n_layers} layers x "
            f"{n_kv_heads} KV heads: one row per layer, one tab-separated value per KV head"
        )
    if not np.isfinite(gates).all() or gates.min() < 0.0 or gates.max() > 1.0:
        raise InterpError(f"{where} holds values outside [0, 1] (1 = full attention, 0 = streaming)")
    return [u for u in units if gates[u] < 0.5]


def windowed_from_json(
    policy: Any, units: Sequence[Unit], kv_map: Sequence[int], layers: Sequence[int], where: str
) -> list[Unit]:
    """The decision units a policy.json windows (KV heads; or query heads of an older atlas, a KV head
    windowed when all its query heads are).

    Raises:
        InterpError: not an object, no ``windowed`` list of [layer, head] pairs, or a pair out of range.
    """
    if not isinstance(policy, dict):
        raise InterpError(f"{where} holds a JSON {type(policy).__name__}, not a policy object with a 'windowed' list")
    pairs = policy.get("windowed")
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p) for p in pairs
    ):
        raise InterpError(f"{where} has no 'windowed' list of [layer, kv_head] pairs: write it with interp atlas")
    index = {layer: i for i, layer in enumerate(layers)}
    per_query = policy.get("unit", "head") == "head"
    n_heads = len(kv_map) if per_query else max(kv_map) + 1
    bad = [p for p in pairs if p[0] not in index or not 0 <= p[1] < n_heads]
    if bad:
        raise InterpError(f"{where} windows {bad[0]}, outside the model's {len(layers)} layers x {n_heads} heads")
    chosen = {(index[a], b) for a, b in pairs}
    if per_query:
        return [(i, g) for i, g in units if all((i, h) in chosen for h in query_heads(kv_map, g))]
    return [u for u in units if u in chosen]

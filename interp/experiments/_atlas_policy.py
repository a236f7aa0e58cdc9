"""The atlas's model-side selector measurements and its policy files (read back, DuoAttention export).

`MEASURES` gives each measurement a selector of `interp.analyses.atlas.SELECTORS` may need:
``profile`` (the atlas's distant mass, and its value-weighted twin for ``vnorm``: free), ``heads``
(induction and duplicate-token scores on repeated random tokens, `interp.experiments.heads`), ``retrieval`` (Wu et al.'s scores,
`interp.experiments.retrieval`), ``ablation`` (each KV head windowed alone on the first profiled
window, from its layer on: `interp.hooks.start_at_layer`).

Policy files: policy.json (KV heads; an older per-query-head one is read as the KV heads all of
whose query heads it windows) or DuoAttention's ``full_attention_heads.tsv`` (one row per layer,
one tab-separated value in [0, 1] per KV head, 1 = full) with ``config.json`` (``sink_size``,
``recent_size``) beside it. `check_policy_file` reads what it can without a model (run before the
model loads), `policy_units` checks it against the model (before any profiling).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from torch import Tensor

from interp.analyses.atlas import (
    AtlasConfig,
    AtlasResult,
    decision_units,
    query_heads,
    windowed_from_duo,
    windowed_from_json,
)
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.models import Model

__all__ = ["MEASURES", "measure", "check_policy_file", "policy_units", "write_duo_attention", "DUO_TSV"]

DUO_TSV = "full_attention_heads.tsv"


def _profile(lm: Model, result: AtlasResult, calib: Tensor, store: Store) -> dict[str, np.ndarray]:
    full = result.full()
    return {
        "profile": full[f"distant_{result.config.policy_window}"],
        "vnorm": full[f"w_distant_{result.config.policy_window}"],
    }


def _heads(lm: Model, result: AtlasResult, calib: Tensor, store: Store) -> dict[str, np.ndarray]:
    from interp.analyses.heads import HeadConfig
    from interp.experiments import registry  # another experiment: through the registry, never imported

    length = min(
        64, (lm.arch.n_ctx - 2) // 2
    )  # TransformerLens's detector: 2 copies of 64 random tokens (fit the context)
    got = registry()["heads"].run(
        lm, HeadConfig(kinds=("duplicate", "induction"), length=length, backend=result.config.backend), Store()
    )
    return {"induction": got.grid("induction"), "duplicate": got.grid("duplicate")}


def _retrieval(lm: Model, result: AtlasResult, calib: Tensor, store: Store) -> dict[str, np.ndarray]:
    from interp.analyses.retrieval import RetrievalConfig
    from interp.experiments import registry  # another experiment: through the registry, never imported

    length = min(result.config.length, 2048)  # Wu et al. score at every length; 2k keeps the scoring to minutes on CPU
    got = registry()["retrieval"].run(
        lm,
        RetrievalConfig(lengths=(length,), depths=(0.1, 0.5, 0.9), mask=False, backend=result.config.backend),
        Store(),
    )
    return {"retrieval": np.nan_to_num(got.scores, nan=0.0)}


def _ablation(lm: Model, result: AtlasResult, calib: Tensor, store: Store) -> dict[str, np.ndarray]:
    from interp.experiments._atlas_causal import token_nll, unit_edits

    cfg = result.config
    n = cfg.ablation_tokens
    base, resid = token_nll(lm, calib, n, (), capture_at=sorted({result.layers[i] for i, _ in result.units}))
    out = np.full((len(result.layers), result.n_kv_heads), np.nan)
    for i, g in store.bar(result.units, desc="atlas: ablation selector", unit="KV head"):
        nll, _ = token_nll(
            lm, calib, n, unit_edits(result, [(i, g)]), start=(result.layers[i], resid.get(result.layers[i]))
        )
        out[i, g] = float(np.mean(nll) - np.mean(base))
    return {"ablation": out}


MEASURES: dict[str, Callable[[Model, AtlasResult, Tensor, Store], dict[str, np.ndarray]]] = {
    "profile": _profile,
    "heads": _heads,
    "retrieval": _retrieval,
    "ablation": _ablation,
}
"""Measurement name -> (lm, result, calibration window [1, pos], store) -> {name: [layer, head or kv_head]}."""


def measure(lm: Model, result: AtlasResult, calib: Tensor, store: Store) -> dict[str, np.ndarray]:
    """Every measurement the config's selectors need, each once (logged in ``selectors.jsonl``)."""
    from interp.analyses.atlas import SELECTORS

    needs = sorted({n for s in result.config.selectors for n in SELECTORS[s].needs} | {"profile"})
    out: dict[str, np.ndarray] = {}
    settings = {**result.config.settings(), **store.notes, "model": lm.name}
    for name in needs:
        if name == "profile":
            out |= _profile(lm, result, calib, store)
            continue
        got = store.cached(name, lambda name=name: {k: v.tolist() for k, v in MEASURES[name](lm, result, calib, store).items()},
                           settings=settings, log="selectors.jsonl")  # fmt: skip
        out |= {k: np.asarray(v, dtype=np.float64) for k, v in got.items()}
    return out


def _duo_config(path: Path) -> tuple[int, int]:
    conf = path.parent / "config.json"
    try:
        data = json.loads(conf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InterpError(
            f"{path} needs DuoAttention's config.json beside it (sink_size, recent_size): {err}"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("sink_size", "recent_size")):
        raise InterpError(f"{conf} must hold integer sink_size and recent_size")
    return int(data["sink_size"]), int(data["recent_size"])


def check_policy_file(path: str) -> dict[str, Any]:
    """Read a policy file without a model: ``{"kind": "json"|"tsv", "data", "sinks", "window"}``.

    Raises:
        InterpError: unreadable, a TSV that is not numbers in [0, 1], a missing config.json, a
            JSON list, a policy without ``windowed``.
    """
    p = Path(path)
    if p.suffix.lower() in (".tsv", ".txt"):
        try:
            gates = np.loadtxt(p, delimiter="\t", ndmin=2)
        except (OSError, ValueError) as err:
            raise InterpError(f"cannot read the DuoAttention pattern {p}: {err}") from None
        if not np.isfinite(gates).all() or gates.min(initial=0.0) < 0.0 or gates.max(initial=0.0) > 1.0:
            raise InterpError(f"{p} holds values outside [0, 1] (1 = full attention, 0 = streaming)")
        sinks, window = _duo_config(p)
        return {"kind": "tsv", "data": gates, "sinks": sinks, "window": window}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InterpError(f"cannot read the policy file {p}: {err}") from None
    if not isinstance(data, dict):
        raise InterpError(f"the policy {p} holds a JSON {type(data).__name__}, not an object with a 'windowed' list")
    if "windowed" not in data:
        raise InterpError(f"the policy {p} has no 'windowed' list: write it with interp atlas")
    return {"kind": "json", "data": data, "sinks": data.get("sinks"), "window": data.get("window")}


def policy_units(path: str, lm: Model, config: AtlasConfig, layers: Sequence[int]) -> list[tuple[int, int]]:
    """The decision units (layer index, kv head) the policy file windows, checked against ``lm`` and ``config``.

    Raises:
        InterpError: see `check_policy_file`; another model's policy; a shape, pair or window that does not fit.
    """
    got = check_policy_file(path)
    arch = lm.arch
    windows = [lm.attention_kwargs(layer)["sliding_window"] for layer in layers]
    units = decision_units(len(layers), arch.n_kv_heads, windows, config.length)
    if (got["sinks"], got["window"]) != (config.sinks, config.policy_window):
        raise InterpError(
            f"the policy {path} keeps {got['sinks']} sinks and a window of {got['window']}, this run {config.sinks} "
            f"and {config.policy_window}: pass --sinks {got['sinks']} --window {got['window']} (one of --windows)"
        )
    if got["kind"] == "tsv":
        return windowed_from_duo(got["data"], units, arch.n_layers, arch.n_kv_heads, str(path))
    data = got["data"]
    if data.get("model") not in (None, lm.name) or data.get("n_layers", arch.n_layers) != arch.n_layers:
        raise InterpError(
            f"the policy {path} was written for {data.get('model')} ({data.get('n_layers')} layers), not {lm.name} "
            f"({arch.n_layers} layers): run interp atlas on this model"
        )
    return windowed_from_json(data, units, arch.kv_map, layers, str(path))


def write_duo_attention(store: Store, result: AtlasResult) -> None:
    """full_attention_heads.tsv and config.json (sink_size, recent_size) of the policy, DuoAttention's format."""
    if store.folder is None:
        return
    from interp.runs import atomic_write_text

    rows = result.duo_attention()
    text = "\n".join("\t".join(f"{v:g}" for v in row) for row in rows) + "\n"
    atomic_write_text(store.folder / DUO_TSV, text)
    store.written.append(DUO_TSV)
    store.write_json("config", {"sink_size": result.config.sinks, "recent_size": result.config.policy_window})


def unit_heads(result: AtlasResult, units: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(layer, query head) of every query head of ``units``."""
    return [(result.layers[i], h) for i, g in units for h in query_heads(result.kv_map, g)]


def finite(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)

"""The causal check's numbers: key tokens (LongPPL), loss changes and needle recall with 95% intervals, frontiers.

Key tokens (Fang et al. 2025, "What is Wrong with Perplexity for Long-context Language
Modeling?", LongPPL): a scored token is key when its loss with only a short context (the last K
to K + 1023 tokens, K = 4096 in the paper) exceeds its loss with the full context by more than
alpha = 2 nats, and its full-context loss is below -beta = 2 nats (`key_tokens`). The key-token
loss change of a condition is the mean, over the key tokens of the held-out windows, of its
per-token loss minus the unedited model's.

Intervals are 95% Student-t intervals over the independent items of a (selector, budget): the
held-out windows x seeds for losses (one window and one seed: over its tokens, all or key), the needle
prompts x seeds for recall (`interp.analyses.stats.t_interval`). A selector's frontier is its (KV saved, key-token loss
change) points over the budgets; its best budget is the largest KV saving whose key-token loss
change is at most the tolerance and whose recall is at least ``recall_min`` of the unedited
model's (`frontier`, `best_savings`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from interp.analyses.stats import t_interval

__all__ = ["key_tokens", "condition_row", "frontier", "best_savings"]


def key_tokens(full: np.ndarray, short: np.ndarray, margin: float = 2.0, max_loss: float = 2.0) -> np.ndarray:
    """Boolean mask of the key tokens: short-context loss - full-context loss > margin and full-context loss < max_loss.

    Args:
        full: per-token loss (nats) with the full context.
        short: the same tokens' loss with only the short context.
    """
    full, short = np.asarray(full, dtype=np.float64), np.asarray(short, dtype=np.float64)
    return (short - full > margin) & (full < max_loss)


def _loss_items(
    runs: Sequence[Mapping[str, Any]], base: Mapping[str, Any], masks: Sequence[np.ndarray]
) -> tuple[list, list]:
    """Per (seed, window) mean loss changes over all tokens and over the key tokens; with a single
    item, that window's per-token changes stand in for the items (an interval over tokens)."""
    every, key, every_tokens, key_tokens_only = [], [], [], []
    for run in runs:
        for t, (nll, base_nll) in enumerate(zip(run["nll"], base["nll"])):
            diff = np.asarray(nll) - np.asarray(base_nll)
            every.append(float(diff.mean()))
            key.append(float(diff[masks[t]].mean()) if masks[t].any() else float("nan"))
            every_tokens.extend(diff.tolist())
            key_tokens_only.extend(diff[masks[t]].tolist())
    if len(key) == 1:
        return every_tokens, key_tokens_only
    return every, key


def condition_row(
    selector: str,
    budget: float,
    runs: Sequence[Mapping[str, Any]],
    base: Mapping[str, Any],
    masks: Sequence[np.ndarray],
) -> dict[str, Any]:
    """One (selector, budget): loss changes (all and key tokens) and recall, each with its 95% interval.

    Args:
        runs: one record per seed: ``{"nll": [per held-out window: per-token loss], "recall": [per needle prompt]}``.
        base: the unedited model's record (same shape).
        masks: per held-out window, the key-token mask (`key_tokens`).
    """
    every, key = _loss_items(runs, base, masks)
    recall = [r for run in runs for r in run["recall"]]
    d, d_lo, d_hi = t_interval(every)
    _, k_lo, k_hi = t_interval(key)
    # the key-token change is the mean over key tokens of every window and seed (not of the per-token items)
    key_all = [float((np.asarray(r["nll"][t]) - np.asarray(base["nll"][t]))[masks[t]].mean())
               for r in runs for t in range(len(masks)) if masks[t].any()]  # fmt: skip
    k_mean = float(np.mean(key_all)) if key_all else float("nan")
    r, r_lo, r_hi = t_interval(recall)
    return {
        "selector": selector, "budget": budget, "n_runs": len(runs),
        "delta_loss": d, "delta_loss_lo": d_lo, "delta_loss_hi": d_hi,
        "delta_key_loss": k_mean, "delta_key_loss_lo": k_lo, "delta_key_loss_hi": k_hi,
        "recall": r, "recall_lo": r_lo, "recall_hi": r_hi,
    }  # fmt: skip


def frontier(causal: pd.DataFrame, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """frontier.csv: one row per (selector, budget), its mean KV saving beside `condition_row`'s numbers."""
    saved = causal.groupby(["selector", "budget"], sort=False)["kv_saved"].mean()
    out = pd.DataFrame(list(rows))
    if out.empty:
        return out
    out.insert(2, "kv_saved", [float(saved.get((s, b), float("nan"))) for s, b in zip(out["selector"], out["budget"])])
    return out


def best_savings(front: pd.DataFrame, tolerance: float, recall_min: float, base_recall: float) -> dict[str, float]:
    """Per selector, the largest KV saving with key-token loss change <= ``tolerance`` and recall >=
    ``recall_min`` x the unedited recall (0.0 when no budget qualifies, NaN without key tokens; recall
    ignored without needles)."""
    out: dict[str, float] = {}
    for selector, part in front.groupby("selector", sort=False):
        if not np.isfinite(part["delta_key_loss"]).any():  # no key tokens: nothing to judge by
            out[str(selector)] = float("nan")
            continue
        ok = part["delta_key_loss"].fillna(math.inf) <= tolerance
        if math.isfinite(base_recall):
            ok &= part["recall"] >= recall_min * base_recall
        out[str(selector)] = float(part.loc[ok, "kv_saved"].max()) if ok.any() else 0.0
    return out

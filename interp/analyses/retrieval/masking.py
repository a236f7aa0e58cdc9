"""The causal check (Wu et al. 2024): needle recall with the top-K heads, or K random heads, masked.

Masking makes a head's attention uniform (`interp.hooks.uniform_attention`, its query set to
zero) and re-answers every sample: recall unmasked, with the top-K heads masked, and with K
random *non-retrieval* heads masked (one draw per seed). K defaults to 5% of all heads. The
conditions are chosen here (`masking_conditions`) and their recalls combined here
(`masking_result`); the runner (`interp.experiments.retrieval`) re-answers the samples.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from jaxtyping import Float

from interp.analyses.retrieval.config import Condition, Head, RetrievalConfig
from interp.analyses.retrieval.results import MaskingResult, RetrievalResult, top_heads
from interp.errors import InterpError

__all__ = ["random_heads", "masking_conditions", "masking_result"]


def random_heads(
    scores: Float[np.ndarray, "layer head"], k: int, seed: int, exclude: Sequence[Head], threshold: float = 0.1
) -> list[Head]:
    """k random heads for the control: drawn from non-retrieval heads (score <= threshold).

    Wu et al. mask random *non-retrieval* heads. Heads in ``exclude`` (the top-K) are never
    drawn; when fewer than k non-retrieval heads remain, every head outside ``exclude`` is
    eligible.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_layers, n_heads = scores.shape
    banned = set(exclude)
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads) if (layer, head) not in banned]
    pool = [h for h in every if not scores[h] > threshold]
    if len(pool) < k:
        pool = every
    if len(pool) < k:
        raise InterpError(f"cannot draw {k} random heads from {len(pool)} eligible heads: lower --mask-random")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pool), size=k, replace=False)
    return sorted(pool[int(i)] for i in pick)


def masking_conditions(scores: Float[np.ndarray, "layer head"], config: RetrievalConfig) -> list[Condition]:
    """The causal check's conditions: the top-K heads, then one random-K draw per seed."""
    k_top, k_random = config.mask_sizes(int(np.asarray(scores).size))
    top = tuple(top_heads(scores, k_top))
    randoms = [tuple(random_heads(scores, k_random, seed, top, config.threshold)) for seed in config.seeds]
    return [("top", None, top)] + [("random", seed, heads) for seed, heads in zip(config.seeds, randoms)]


def masking_result(
    result: RetrievalResult,
    conditions: Sequence[Condition],
    recalls: Mapping[tuple[str, Optional[int]], Mapping[str, float]],
) -> MaskingResult:
    """The causal check from each condition's per-sample recalls.

    Args:
        result: the unmasked result (its samples' recalls are the unmasked ones).
        conditions: `masking_conditions`, the top-K first.
        recalls: (condition name, seed) -> {sample key: recall with those heads masked}.
    """
    (_, _, top), randoms = conditions[0], conditions[1:]
    seeds = tuple(seed for _, seed, _ in randoms)
    keys = [s.key for s in result.samples]
    per = tuple(
        {
            "key": key,
            "recall_top_masked": recalls[("top", None)][key],
            "recall_random_masked": float(np.mean([recalls[("random", seed)][key] for seed in seeds])),
        }
        for key in keys
    )
    return MaskingResult(
        k_top=len(top),
        k_random=len(randoms[0][2]),
        top=tuple(top),
        random=tuple(tuple(heads) for _, _, heads in randoms),
        seeds=seeds,
        recall_unmasked=float(np.mean([r.recall for r in result.samples])),
        recall_top=float(np.mean([recalls[("top", None)][key] for key in keys])),
        recall_random=tuple(float(np.mean([recalls[("random", seed)][key] for key in keys])) for seed in seeds),
        per_sample=per,
    )

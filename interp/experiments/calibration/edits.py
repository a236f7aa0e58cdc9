"""The model side of the calibrations: the edits for a model's heads, batched answer scoring,
and ACT's candidate heads (see `interp.experiments.calibration`)."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Shaped
from torch import Tensor

from interp.analyses.calibration import (
    ACTRule,
    CalibrationConfig,
    check_beta,
    check_gamma,
    choice_scores,
    first_token_keys,
    hidden_sink_mass,
)
from interp.analyses.ranking import rank_heads
from interp.datasets.choices import ChoiceItem
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.hooks import ComputedKeyBias, KeyBias, intervene, key_bias
from interp.models import Model

__all__ = ["act_edits", "zerotune_edits", "choice_token_ids", "score_choices", "rank_act_candidates", "EditFactory"]

Head = tuple[int, int]
EditFactory = Callable[[Tensor, Tensor], list]  # (input_ids, attention_mask) -> edits for that batch


def act_edits(
    lm: Model,
    heads: Sequence[Head],
    *,
    beta: float = 0.4,
    tau: float = 0.1,
    min_queries: int = 16,
    include_first: bool = False,
    attention_mask: Optional[Shaped[Tensor, "batch key_pos"]] = None,
    backend: str = "auto",
) -> list[ComputedKeyBias]:
    """ACT on ``heads`` for a batch with ``attention_mask`` (use inside `interp.hooks.intervene`):
    each head's keys and bias come from its live q and k (`ACTRule`)."""
    check_beta(beta)
    if not 0 < tau < 1:
        raise InterpError(f"tau must lie in (0, 1), got {tau}")
    return [
        ComputedKeyBias(
            layer,
            head,
            ACTRule(
                beta=beta,
                tau=tau,
                min_queries=min_queries,
                include_first=include_first,
                attention=ACTRule.for_head(lm.attention_kwargs(layer), head),
                key_padding_mask=attention_mask,
                backend=backend,
            ),
        )
        for layer, head in lm.arch.check_heads(heads)
    ]


def zerotune_edits(
    lm: Model,
    heads: Sequence[Head],
    gamma: Union[float, Sequence[float]],
    *,
    attention_mask: Optional[Shaped[Tensor, "batch key_pos"]] = None,
    batch: int = 1,
    key_pos: Optional[int] = None,
) -> list[KeyBias]:
    """Initial-token scaling on ``heads``: a log(gamma) bias on each row's first real token.

    Args:
        gamma: one value for every head, or one per head; each > 0 (1 = no change).
        attention_mask: the batch's HF attention_mask (left padding), or None with ``batch``
            and ``key_pos``.
    """
    heads = lm.arch.check_heads(heads)
    gammas = [gamma] * len(heads) if isinstance(gamma, (int, float)) else list(gamma)
    if len(gammas) != len(heads):
        raise InterpError(f"got {len(gammas)} gammas for {len(heads)} heads: give one gamma, or one per head")
    for g in gammas:
        check_gamma(g)
    keys = first_token_keys(attention_mask, batch, key_pos)
    return [key_bias(layer, head, keys, math.log(g)) for (layer, head), g in zip(heads, gammas)]


def choice_token_ids(lm: Model, choices: Sequence[str]) -> list[int]:
    """First token id of each answer choice; they must differ."""
    ids = []
    for c in choices:
        toks = lm.tokens(c)  # the choice as a continuation: no BOS
        if not toks:
            raise InterpError(f"answer choice {c!r} tokenises to nothing")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise InterpError(f"answer choices {list(choices)} share a first token: make their first tokens differ")
    return ids


def score_choices(
    lm: Model,
    items: Sequence[ChoiceItem],
    choice_ids: Sequence[int],
    edits: Optional[EditFactory] = None,
    *,
    batch_size: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and correct-answer log-probabilities of ``items`` (`choice_scores` of each batch).

    Prompts are left-padded into batches of ``batch_size``; ``edits`` builds the interventions
    for each batch from its ids and attention mask.

    Returns:
        (pred [n] int, logprob [n] float of the correct choice).
    """
    preds, logps = [], []
    cids = torch.tensor(list(choice_ids))
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, mask = lm.encode_batch([it.prompt for it in chunk])
        with intervene(lm, edits(ids, mask) if edits is not None else []):
            logits = lm.forward(ids, mask)[:, -1, :]
        pred, logp = choice_scores(logits[:, cids.to(logits.device)], torch.tensor([it.answer for it in chunk]))
        preds.append(pred)
        logps.append(logp)
    return np.concatenate(preds), np.concatenate(logps)


def rank_act_candidates(
    lm: Model, items: Sequence[ChoiceItem], config: CalibrationConfig, store: Optional[Store] = None
) -> list[tuple[int, int, float]]:
    """Heads ranked by hidden-sink mass on ``items`` (mean over prompts of the summed recv_mean of
    the hidden sinks, `hidden_sink_mass`), largest first (`rank_heads`); only heads with some
    hidden sink. Returns [(layer, head, mass)].

    Batches of ``config.batch_size`` prompts are shared over the ranks (`Store.map`, not logged:
    the search logs the ranking as one step) and summed in batch order.
    """
    from interp.hooks import stream_layers
    from interp.kernels import attention_stats

    n_layers, n_heads = lm.arch.n_layers, lm.arch.n_heads

    def batch_mass(key: str) -> Tensor:
        start = int(key.removeprefix("batch-"))
        chunk = items[start : start + config.batch_size]
        ids, mask = lm.encode_batch([it.prompt for it in chunk])
        mass = torch.zeros(n_layers, n_heads, dtype=torch.float64)

        def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
            rm = attention_stats(
                q, k, **lm.attention_kwargs(layer), key_padding_mask=mask, backend=config.backend
            ).recv_mean
            mass[layer] += hidden_sink_mass(rm, config.tau, config.min_queries, config.include_first)

        stream_layers(lm, ids, None, on_layer, attention_mask=mask)  # every layer, no logits
        return mass

    keys = [f"batch-{start}" for start in range(0, len(items), config.batch_size)]
    per_batch = (store or Store()).map(
        keys, batch_mass, log=None, what="ACT candidate batches", progress=False, idle_ok=True
    )
    mass = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for key in keys:
        mass += per_batch[key]
    return [(layer, head, m) for layer, head, m in rank_heads(mass / len(items)) if m > 0]

"""`run`: the calibration's search on the calibration split, then the held-out scoring before and after.

Every step (the baseline, one head set tried, one gamma, the held-out split before and after) is
one record of the store's log, so a re-run with the same folder resumes; within a step the
batches of prompts are shared over the ranks (`Step`). See `interp.experiments.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional, Sequence

import numpy as np

from interp.analyses.calibration import CHECK_SETTINGS, CalibrationConfig, CalibrationResult, better
from interp.datasets.choices import ChoiceItem, choices_digest, load_choices
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.experiments.calibration.edits import (
    EditFactory,
    act_edits,
    choice_token_ids,
    rank_act_candidates,
    score_choices,
    zerotune_edits,
)
from interp.models import Model

__all__ = ["run", "Steps", "Search"]

Head = tuple[int, int]


@dataclass(frozen=True)
class Steps:
    """How one run scores items and records its steps.

    Attributes:
        lm: the model.
        config: the calibration's config.
        store: where each step is logged and resumed from.
        choice_ids: the first token of each answer choice.
        settings: what a resumed search must agree on.
        calib: the calibration split.
    """

    lm: Model
    config: CalibrationConfig
    store: Store
    choice_ids: list[int]
    settings: dict
    calib: Sequence[ChoiceItem]

    def evaluate(self, items: Sequence[ChoiceItem], factory: Optional[EditFactory]) -> tuple[np.ndarray, np.ndarray]:
        """(correct [n] bool, logp [n]) of ``items`` under the edits of ``factory``.

        Units of work = batches of items, shared over the ranks; the batches (and so the padding
        and the numbers) are those of a one-process run. Not logged: a step is.
        """
        bs = self.config.batch_size
        keys = [f"batch-{start}" for start in range(0, len(items), bs)]

        def one(key: str) -> tuple[np.ndarray, np.ndarray]:
            start = int(key.removeprefix("batch-"))
            return score_choices(self.lm, items[start : start + bs], self.choice_ids, factory, batch_size=bs)

        got = self.store.map(keys, one, log=None, what="task batches", progress=False, idle_ok=True)
        pred = np.concatenate([got[k][0] for k in keys])
        logp = np.concatenate([got[k][1] for k in keys])
        return pred == np.array([it.answer for it in items]), logp

    def cached(self, key: str, fn: Callable[[], dict]) -> dict:
        """One search step, resumed from samples.jsonl."""
        return self.store.cached(key, fn, settings=self.settings)

    def calib_step(self, factory: Optional[EditFactory], **extra: Any) -> dict:
        """Calibration-split accuracy and mean log-prob of the correct answer under ``factory``."""
        correct, logp = self.evaluate(self.calib, factory)
        return {"accuracy": float(correct.mean()), "mean_logp": float(logp.mean()), **extra}


@dataclass
class Search:
    """What a search chose: the heads, ZeroTuning's gamma, its best calibration step, every step,
    the edits of the chosen calibration (None: no change) and ACT's hidden-sink mass per head."""

    chosen: list[Head]
    best: dict
    search: list[dict]
    final: Optional[EditFactory]
    gamma: Optional[float] = None
    sink_mass: dict[Head, float] = field(default_factory=dict)


def _act_search(steps: Steps, base: dict) -> Search:
    """ACT: the fixed heads, or greedy forward selection over the ``n_candidates`` heads with the
    strongest hidden sinks (a head is kept when adding it is `better` than the best so far)."""
    lm, config, store, calib = steps.lm, steps.config, steps.store, steps.calib

    def factory_for(heads: list[Head]) -> EditFactory:
        return lambda ids, mask: act_edits(
            lm, heads, beta=config.beta, tau=config.tau, min_queries=config.min_queries,
            include_first=config.include_first, attention_mask=mask, backend=config.backend,
        )  # fmt: skip

    search = [base]
    if config.heads is not None:
        chosen = list(config.heads)
        best = steps.cached("calib-fixed", lambda: steps.calib_step(factory_for(chosen), step="fixed heads"))
        search.append(best)
        masses = steps.cached(
            "fixed-sink-mass",
            lambda: {
                "ranked": [[l, h, m] for l, h, m in rank_act_candidates(lm, calib, config, store) if (l, h) in chosen]
            },
        )["ranked"]
        sink_mass = {(int(l), int(h)): float(m) for l, h, m in masses}
        return Search(chosen, best, search, factory_for(chosen), sink_mass=sink_mass)
    ranked = steps.cached(
        "candidates",
        lambda: {
            "ranked": [[l, h, m] for l, h, m in rank_act_candidates(lm, calib, config, store)[: config.n_candidates]]
        },
    )["ranked"]
    sink_mass = {(int(l), int(h)): float(m) for l, h, m in ranked}
    chosen, best = [], base
    for layer, head, mass in store.bar(ranked, desc="ACT head search", unit="head"):
        trial = chosen + [(int(layer), int(head))]
        rec = steps.cached(
            "trial-" + ",".join(f"{l}.{h}" for l, h in trial),  # keyed by the whole set tried
            partial(steps.calib_step, factory_for(trial), step=f"+{layer}.{head}", hidden_mass=mass),
        )
        kept = better(rec, best)
        search.append({**rec, "kept": kept})
        if kept:
            chosen, best = trial, rec
    return Search(chosen, best, search, factory_for(chosen) if chosen else None, sink_mass=sink_mass)


def _zerotune_search(steps: Steps, base: dict) -> Search:
    """ZeroTuning: every head (or ``heads``), gamma = the fixed one, or the best grid value, or 1
    (no change) when none beats the uncalibrated model."""
    lm, config = steps.lm, steps.config
    heads = (
        list(config.heads)
        if config.heads is not None
        else [(l, h) for l in range(lm.arch.n_layers) for h in range(lm.arch.n_heads)]
    )

    def factory_for(g: float) -> EditFactory:
        return lambda ids, mask: zerotune_edits(lm, heads, g, attention_mask=mask)

    search = [base]
    if config.gamma is not None:
        gamma = float(config.gamma)
        best = steps.cached(
            "calib-fixed", lambda: steps.calib_step(factory_for(gamma), step=f"gamma={gamma:g}", gamma=gamma)
        )
        search.append(best)
    else:
        gamma, best = 1.0, {**base, "gamma": 1.0}
        for g in steps.store.bar(config.gammas, desc="ZeroTuning gamma search", unit="gamma"):
            rec = steps.cached(f"gamma-{g:g}", partial(steps.calib_step, factory_for(g), step=f"gamma={g:g}", gamma=g))
            search.append(rec)
            if better(rec, best):
                gamma, best = float(g), rec
    final = factory_for(gamma) if gamma != 1.0 else None
    return Search(heads if final is not None else [], best, search, final, gamma=gamma)


def _heldout(steps: Steps, held: Sequence[ChoiceItem], final: Optional[EditFactory]) -> tuple[dict, dict]:
    """The held-out split scored before and after the chosen calibration (the same record when
    nothing was chosen): {"correct": [...], "logp": [...]} each."""

    def scored(key: str, factory: Optional[EditFactory]) -> dict:
        def score() -> dict:
            c, lp = steps.evaluate(held, factory)
            return {"correct": c.tolist(), "logp": lp.tolist()}

        return steps.cached(key, score)

    before = scored("heldout-before", None)
    return before, scored("heldout-after", final) if final is not None else before


def run(lm: Model, config: CalibrationConfig = CalibrationConfig(), store: Optional[Store] = None) -> CalibrationResult:
    """Choose a calibration on the choice set's calibration split and evaluate it on the held-out split.

    Both searches compare (calibration accuracy, mean log-prob of the correct answer)
    lexicographically (`better`): accuracy first, the log-prob only breaks ties (Yu et al.
    select on accuracy alone, which cannot move on a calibration split already at 100%).
    ACT: greedy forward selection over the ``n_candidates`` heads with the strongest hidden
    sinks: a head is kept when adding it to the kept set is better than the best so far.
    ZeroTuning: every head (or ``heads``), gamma = the best grid value, or 1 (no change) when
    none beats the uncalibrated model.

    Args:
        store: where each search step is logged and resumed from (`Store`; None keeps nothing).
            Launched on several ranks, every step's batches are shared over the ranks and every
            rank returns the same result.

    Raises:
        InterpError: heads outside the model, answer choices that share a first token, more
            ranks than calibration batches.
    """
    from interp.distributed import world

    store = store or Store()
    if config.heads is not None:
        lm.arch.check_heads(config.heads)
    choice_set = load_choices(config.task)
    calib, held = choice_set.split("calibration"), choice_set.split("heldout")
    cids = choice_token_ids(lm, choice_set.choices)
    store.note(task_sha256=choices_digest(choice_set))
    # what a resumed search agrees on (the checks' thresholds change no step: a resume may change them)
    settings = {
        **{k: v for k, v in config.settings().items() if k not in CHECK_SETTINGS},
        **store.notes,
        "model": lm.name,
    }
    n_batches = -(-len(calib) // config.batch_size)
    if world().size > n_batches:
        raise InterpError(
            f"{world().size} ranks but the calibration split has only {n_batches} batches of --batch-size "
            f"{config.batch_size}: launch at most {n_batches} processes or lower --batch-size"
        )
    steps = Steps(lm, config, store, cids, settings, calib)
    base = steps.cached("calib-baseline", lambda: steps.calib_step(None, step="baseline"))
    found = (_act_search if config.method == "act" else _zerotune_search)(steps, base)
    before, after = _heldout(steps, held, found.final)
    calib_prompts = {it.prompt for it in calib}
    chosen = found.chosen
    return CalibrationResult(
        config=config,
        model=lm.name,
        task=choice_set.name,
        heads=tuple((int(l), int(h)) for l, h in chosen),
        gamma=found.gamma if config.method == "zerotune" else None,
        search=tuple(found.search),
        calib_before=float(base["accuracy"]),
        calib_after=float(found.best["accuracy"]),
        item_ids=tuple(it.id for it in held),
        before=np.asarray(before["correct"], bool),
        after=np.asarray(after["correct"], bool),
        logp_before=np.asarray(before["logp"], float),
        logp_after=np.asarray(after["logp"], float),
        n_choices=len(choice_set.choices),
        heldout_in_calibration=sum(it.prompt in calib_prompts for it in held),
        # a head without hidden sinks on the calibration prompts is left out of the ranking: mass 0
        head_sink_mass=tuple(found.sink_mass.get((int(l), int(h)), 0.0) for l, h in chosen)
        if config.method == "act"
        else (),
    )

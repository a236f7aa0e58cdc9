"""`interp calibrate act|zerotune`: choose a calibration on a choice set's calibration split and
evaluate it on the held-out split (Yu et al. 2024, ACT; Han et al. 2025, ZeroTuning).

The runner builds the interventions for the model's heads (`act_edits`, `zerotune_edits`: key
biases inside the model's own attention, `interp.hooks.intervene`), scores batches of prompts
by their answer-choice logits (`score_choices`), and runs the search of
`interp.analyses.calibration` step by step. Each search step (baseline, one head set tried,
one gamma, held-out before and after) is one record of ``samples.jsonl``: a re-run with the
same folder resumes. Within a step the batches of prompts are shared over the ranks (the
search itself runs in lockstep on all of them); rank 0 writes the log.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import typer
from jaxtyping import Shaped
from torch import Tensor

from interp.analyses.calibration import (
    CHECK_SETTINGS,
    ACTBias,
    CalibrationConfig,
    CalibrationResult,
    better,
    check_beta,
    check_gamma,
    choice_scores,
    first_token_keys,
    head_pairs,
    hidden_sink_mass,
)
from interp.analyses.ranking import rank_heads
from interp.datasets.choices import ChoiceItem, choices_digest, load_choices
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, Store, execute
from interp.hooks import KeyBias, intervene, key_bias
from interp.models import Model

__all__ = [
    "EXPERIMENTS",
    "ACT",
    "ZEROTUNE",
    "check_heads",
    "act_edits",
    "zerotune_edits",
    "choice_token_ids",
    "score_choices",
    "rank_act_candidates",
    "run",
]

Head = tuple[int, int]
EditFactory = Callable[[Tensor, Tensor], list]  # (input_ids, attention_mask) -> edits for that batch


def check_heads(lm: Model, heads: Sequence[Any]) -> list[Head]:
    """Validated (layer, head) pairs, or an error naming the bad one and the valid range."""
    out = []
    for layer, head in head_pairs(heads):
        if not 0 <= layer < lm.arch.n_layers or not 0 <= head < lm.arch.n_heads:
            raise InterpError(
                f"head {layer}.{head} out of range: the model has {lm.arch.n_layers} layers (0-{lm.arch.n_layers - 1}) "
                f"and {lm.arch.n_heads} heads per layer (0-{lm.arch.n_heads - 1})"
            )
        out.append((layer, head))
    return out


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
) -> list[ACTBias]:
    """ACT on ``heads`` for a batch with ``attention_mask`` (use inside `interp.hooks.intervene`)."""
    check_beta(beta)
    if not 0 < tau < 1:
        raise InterpError(f"tau must lie in (0, 1), got {tau}")
    placeholder = torch.zeros(1, dtype=torch.bool)
    return [
        ACTBias(
            layer,
            head,
            placeholder,
            0.0,
            beta=beta,
            tau=tau,
            min_queries=min_queries,
            include_first=include_first,
            attention=lm.attention_kwargs(layer),
            key_padding_mask=attention_mask,
            backend=backend,
        )
        for layer, head in check_heads(lm, heads)
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
    heads = check_heads(lm, heads)
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
        check_heads(lm, config.heads)
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

    def evaluate(items: Sequence[ChoiceItem], factory: Optional[EditFactory]) -> tuple[np.ndarray, np.ndarray]:
        # Units of work = batches of items, shared over the ranks; the batches (and so the
        # padding and the numbers) are those of a one-process run. Not logged: a step is.
        bs = config.batch_size
        keys = [f"batch-{start}" for start in range(0, len(items), bs)]

        def one(key: str) -> tuple[np.ndarray, np.ndarray]:
            start = int(key.removeprefix("batch-"))
            return score_choices(lm, items[start : start + bs], cids, factory, batch_size=bs)

        got = store.map(keys, one, log=None, what="task batches", progress=False, idle_ok=True)
        pred = np.concatenate([got[k][0] for k in keys])
        logp = np.concatenate([got[k][1] for k in keys])
        return pred == np.array([it.answer for it in items]), logp

    def cached(key: str, fn: Callable[[], dict]) -> dict:  # one search step, resumed from samples.jsonl
        return store.cached(key, fn, settings=settings)

    def calib_step(factory: Optional[EditFactory], **extra: Any) -> dict:
        correct, logp = evaluate(calib, factory)
        return {"accuracy": float(correct.mean()), "mean_logp": float(logp.mean()), **extra}

    base = cached("calib-baseline", lambda: calib_step(None, step="baseline"))
    search: list[dict] = [base]
    gamma: Optional[float] = None
    sink_mass: dict[Head, float] = {}  # ACT: hidden-sink mass on the calibration prompts (the check's numbers)
    if config.method == "act":

        def factory_for(heads: list[Head]) -> EditFactory:
            return lambda ids, mask: act_edits(
                lm,
                heads,
                beta=config.beta,
                tau=config.tau,
                min_queries=config.min_queries,
                include_first=config.include_first,
                attention_mask=mask,
                backend=config.backend,
            )

        if config.heads is not None:
            chosen = list(config.heads)
            best = cached("calib-fixed", lambda: calib_step(factory_for(chosen), step="fixed heads"))
            search.append(best)
            masses = cached(
                "fixed-sink-mass",
                lambda: {
                    "ranked": [
                        [l, h, m] for l, h, m in rank_act_candidates(lm, calib, config, store) if (l, h) in chosen
                    ]
                },
            )["ranked"]
            sink_mass = {(int(l), int(h)): float(m) for l, h, m in masses}
        else:
            ranked = cached(
                "candidates",
                lambda: {
                    "ranked": [
                        [l, h, m] for l, h, m in rank_act_candidates(lm, calib, config, store)[: config.n_candidates]
                    ]
                },
            )["ranked"]
            sink_mass = {(int(l), int(h)): float(m) for l, h, m in ranked}
            chosen, best = [], base
            for layer, head, mass in store.bar(ranked, desc="ACT head search", unit="head"):
                trial = chosen + [(int(layer), int(head))]
                rec = cached(
                    "trial-" + ",".join(f"{l}.{h}" for l, h in trial),  # keyed by the whole set tried
                    lambda: calib_step(factory_for(trial), step=f"+{layer}.{head}", hidden_mass=mass),
                )
                kept = better(rec, best)
                search.append({**rec, "kept": kept})
                if kept:
                    chosen, best = trial, rec
        final = factory_for(chosen) if chosen else None
    else:
        heads = (
            list(config.heads)
            if config.heads is not None
            else [(l, h) for l in range(lm.arch.n_layers) for h in range(lm.arch.n_heads)]
        )
        chosen = heads

        def factory_for(g: float) -> EditFactory:  # type: ignore[misc]
            return lambda ids, mask: zerotune_edits(lm, heads, g, attention_mask=mask)

        if config.gamma is not None:
            gamma = float(config.gamma)
            best = cached("calib-fixed", lambda: calib_step(factory_for(gamma), step=f"gamma={gamma:g}", gamma=gamma))
            search.append(best)
        else:
            gamma, best = 1.0, {**base, "gamma": 1.0}
            for g in store.bar(config.gammas, desc="ZeroTuning gamma search", unit="gamma"):
                rec = cached(f"gamma-{g:g}", lambda: calib_step(factory_for(g), step=f"gamma={g:g}", gamma=g))
                search.append(rec)
                if better(rec, best):
                    gamma, best = float(g), rec
        final = factory_for(gamma) if gamma != 1.0 else None
        if final is None:
            chosen = []

    def heldout(key: str, factory: Optional[EditFactory]) -> dict:
        def score() -> dict:
            c, lp = evaluate(held, factory)
            return {"correct": c.tolist(), "logp": lp.tolist()}

        return cached(key, score)

    before = heldout("heldout-before", None)
    after = heldout("heldout-after", final) if final is not None else before
    calib_prompts = {it.prompt for it in calib}
    return CalibrationResult(
        config=config,
        model=lm.name,
        task=choice_set.name,
        heads=tuple((int(l), int(h)) for l, h in chosen),
        gamma=gamma if config.method == "zerotune" else None,
        search=tuple(search),
        calib_before=float(base["accuracy"]),
        calib_after=float(best["accuracy"]),
        item_ids=tuple(it.id for it in held),
        before=np.asarray(before["correct"], bool),
        after=np.asarray(after["correct"], bool),
        logp_before=np.asarray(before["logp"], float),
        logp_after=np.asarray(after["logp"], float),
        n_choices=len(choice_set.choices),
        heldout_in_calibration=sum(it.prompt in calib_prompts for it in held),
        # a head without hidden sinks on the calibration prompts is left out of the ranking: mass 0
        head_sink_mass=tuple(sink_mass.get((int(l), int(h)), 0.0) for l, h in chosen) if config.method == "act" else (),
    )


# --------------------------------------------------------------------------------------------
# What the commands show
# --------------------------------------------------------------------------------------------


def describe(result: CalibrationResult) -> str:
    """The chosen calibration and the held-out accuracy before and after, with intervals."""
    s = result.summary()
    b, a = s["heldout_accuracy"]["before"], s["heldout_accuracy"]["after"]
    heads = (", ".join(s["heads"]) if len(s["heads"]) <= 10 else f"{len(s['heads'])} heads") or "none"
    return (
        f"{s['method']} on {s['task']}: heads {heads}"
        + (f", gamma {s['gamma']:g}" if s["gamma"] is not None else "")
        + f"; held-out accuracy {b['accuracy']:.1%} [{b['ci'][0]:.1%}, {b['ci'][1]:.1%}] -> "
        f"{a['accuracy']:.1%} [{a['ci'][0]:.1%}, {a['ci'][1]:.1%}] (n={s['heldout_n']}, diff {s['difference']:+.1%}, "
        f"95% CI [{s['difference_ci'][0]:+.1%}, {s['difference_ci'][1]:+.1%}], McNemar p={s['mcnemar_p']:.2f})"
    )


def tables(result: CalibrationResult) -> dict[str, Any]:
    return {
        "heads": result.heads_dataframe(),
        "accuracy": result.to_dataframe(),
        "search": result.search_dataframe(),
        "items": result.items_dataframe(),
    }


def figures(result: CalibrationResult) -> dict[str, Any]:
    from interp.plots.sinks import calibration_figure

    return {"calibration": calibration_figure(result)}


def _check(config: CalibrationConfig) -> None:
    load_choices(config.task)  # a bad choice set fails before the model loads


_TASK_HELP = "Choice set: shipped (sentiment, mcq) or a .jsonl file."


def cli_act(
    task: str = typer.Option("sentiment", "--task", help=_TASK_HELP),
    model: Optional[str] = flags.model_option(),
    out: Path = flags.out_option("runs/calibrate-act"),
    heads: Optional[str] = typer.Option(None, "--heads", help="Fixed heads LAYER.HEAD,... (default: greedy search)."),
    beta: float = typer.Option(0.4, "--beta", help="Fraction of sink attention kept, in (0, 1]."),
    tau: float = typer.Option(0.1, "--tau", help="Sink threshold on recv_mean."),
    min_queries: int = typer.Option(
        16, "--min-queries", help="Keys seen by fewer queries are not sinks (1 = paper exactly)."
    ),
    include_first: bool = typer.Option(False, "--include-first", help="Also scale the first sink (ACT keeps it)."),
    candidates: Optional[int] = typer.Option(
        None, "--candidates", help="Heads tried by the greedy search, strongest hidden sinks first (default 12)."
    ),
    batch_size: int = typer.Option(20, "--batch-size", help="Prompts per forward pass."),
    backend: str = flags.backend_option(),
    fresh: bool = flags.fresh_option(),
) -> None:
    """ACT (Yu et al. 2024): search heads on the calibration split, report held-out accuracy before/after;
    writes heads.csv, accuracy.csv, search.csv, items.csv, run.json and calibration.html into OUT."""
    flags.not_together(
        "--heads",
        heads is not None,
        "--candidates",
        candidates is not None,
        "fixed --heads skip the greedy search over --candidates; give one of them",
    )
    config = CalibrationConfig(
        method="act", task=task, heads=flags.parse_heads(heads), beta=beta, tau=tau, min_queries=min_queries,
        include_first=include_first, n_candidates=12 if candidates is None else candidates, batch_size=batch_size, backend=flags.check_backend(backend),
    )  # fmt: skip
    execute(ACT, config, launch=flags.launch(), model=model, out=out, fresh=fresh)


def cli_zerotune(
    task: str = typer.Option("sentiment", "--task", help=_TASK_HELP),
    model: Optional[str] = flags.model_option(),
    out: Path = flags.out_option("runs/calibrate-zerotune"),
    heads: Optional[str] = typer.Option(None, "--heads", help="Heads LAYER.HEAD,... to scale (default: every head)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Fixed gamma > 0 (default: search --gammas)."),
    gammas: Optional[str] = typer.Option(
        None, "--gammas", help="Grid of gammas searched on the calibration split (default 0.25,0.5,0.75,1.5,2,4)."
    ),
    batch_size: int = typer.Option(20, "--batch-size", help="Prompts per forward pass."),
    fresh: bool = flags.fresh_option(),
) -> None:
    """ZeroTuning (initial-token scaling): choose gamma on the calibration split, report held-out accuracy;
    writes heads.csv, accuracy.csv, search.csv, items.csv, run.json and calibration.html into OUT."""
    flags.not_together(
        "--gamma",
        gamma is not None,
        "--gammas",
        gammas is not None,
        "a fixed --gamma skips the search over --gammas; give one of them",
    )
    grid = flags.parse_floats(gammas, "--gammas")
    config = CalibrationConfig(
        method="zerotune", task=task, heads=flags.parse_heads(heads), gamma=gamma,
        **({"gammas": grid} if grid is not None else {}), batch_size=batch_size,
    )  # fmt: skip
    execute(ZEROTUNE, config, launch=flags.launch(), model=model, out=out, fresh=fresh)


_COMMON = dict(config=CalibrationConfig, run=run, tables=tables, figures=figures, describe=describe, check=_check)
ACT = Experiment(name="calibrate-act", title="ACT calibration", command=("calibrate", "act"), cli=cli_act, **_COMMON)
ZEROTUNE = Experiment(
    name="calibrate-zerotune",
    title="ZeroTuning calibration",
    command=("calibrate", "zerotune"),
    cli=cli_zerotune,
    **_COMMON,
)
EXPERIMENTS = (ACT, ZEROTUNE)

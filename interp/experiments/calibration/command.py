"""``interp calibrate act|zerotune``: the commands, their tables, figures and finding (see
`interp.experiments.calibration`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from interp.analyses.calibration import CalibrationConfig, CalibrationResult
from interp.datasets.choices import load_choices
from interp.experiments import flags
from interp.experiments._base import Experiment, execute
from interp.experiments.calibration.search import run

__all__ = ["EXPERIMENTS", "ACT", "ZEROTUNE", "describe", "tables", "figures"]


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

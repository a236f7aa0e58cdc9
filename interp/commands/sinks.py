"""`interp calibrate act|zerotune`.

Thin typer layer: flags map onto `interp.analyses.sinks.SinkConfig` and
`interp.analyses.calibration.CalibrationConfig`; each command calls one library function and
writes its tables, run.json and a figure into --out. Both resume from their SampleLog
(samples.jsonl) when re-run with the same folder and settings (``--fresh`` starts over).
Launched on several ranks (torchrun, accelerate launch, srun), the units of work are shared
out by `interp.distributed` and rank 0 writes the merged result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "calibrate_act", "calibrate_zerotune"]

_MODEL_HELP = "HF hub id or local folder (default: embedded SmolLM2-135M-Instruct)."


def _parse_ints(text: Optional[str], flag: str):
    from interp.errors import InterpError

    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError as err:
        raise InterpError(f"{flag} must be comma-separated ints like 10,15,20; got {text!r}") from err


def _parse_floats(text: str, flag: str) -> tuple[float, ...]:
    from interp.errors import InterpError

    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError as err:
        raise InterpError(f"{flag} must be comma-separated numbers like 0.5,2; got {text!r}") from err


def _parse_heads(text: Optional[str]):
    """'12.3,20.1' -> ((12, 3), (20, 1))."""
    from interp.errors import InterpError

    if text is None:
        return None
    heads = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer, head = part.split(".")
            heads.append((int(layer), int(head)))
        except ValueError as err:
            raise InterpError(f"--heads takes LAYER.HEAD pairs separated by commas, e.g. 12.3,20.1; got {part!r}") from err
    if not heads:
        raise InterpError("--heads is empty: give LAYER.HEAD pairs, e.g. 12.3,20.1, or omit it")
    return tuple(heads)


def _calibrate(method: str, *, model, task, out, heads, fresh, **kwargs) -> None:
    from rich.console import Console

    import hashlib

    from interp.analyses.calibration import CalibrationConfig, calibrate, load_task
    from interp.distributed import open_log, rank_model, world
    from interp.plots.export import save_figure
    from interp.plots.sinks import calibration_figure
    from interp.runs import atomic_write_csv, atomic_write_json, prepare_out_dir, run_info

    started = time.time()
    config = CalibrationConfig(method=method, task=task, heads=_parse_heads(heads), **kwargs)
    config.validate()
    items = load_task(task)  # a bad task fails before the model loads
    digest = hashlib.sha256(repr((items.choices, items.items)).encode()).hexdigest()[:16]
    folder = prepare_out_dir(out)
    console = Console(stderr=True)
    lm = rank_model(model)
    config.validate(lm)
    settings = {**config.settings(), "task_sha256": digest, "model": lm.name}
    log = open_log(folder / "samples.jsonl", settings, fresh=fresh)
    result = calibrate(lm, config, log=log)
    if not world().main:
        return  # every rank holds the merged result; rank 0 writes it
    atomic_write_csv(folder / "heads.csv", result.heads_dataframe())
    atomic_write_csv(folder / "accuracy.csv", result.to_dataframe())
    atomic_write_csv(folder / "search.csv", result.search_dataframe())
    atomic_write_csv(folder / "items.csv", result.items_dataframe())
    save_figure(calibration_figure(result), folder / "calibration.html")
    info = run_info(lm, settings=settings, started=started)
    info["summary"] = result.summary()
    atomic_write_json(folder / "run.json", info)
    s = info["summary"]
    b, a = s["heldout_accuracy"]["before"], s["heldout_accuracy"]["after"]
    console.print(
        f"[bold]{method}[/] on {s['task']}: heads "
        + ((", ".join(s["heads"]) if len(s["heads"]) <= 10 else f"{len(s['heads'])} heads") or "none")
        + (f", gamma {s['gamma']:g}" if s["gamma"] is not None else "")
        + f"; held-out accuracy {b['accuracy']:.1%} [{b['ci'][0]:.1%}, {b['ci'][1]:.1%}] -> "
        f"{a['accuracy']:.1%} [{a['ci'][0]:.1%}, {a['ci'][1]:.1%}] (n={s['heldout_n']}, diff {s['difference']:+.1%}, "
        f"95% CI [{s['difference_ci'][0]:+.1%}, {s['difference_ci'][1]:+.1%}], McNemar p={s['mcnemar_p']:.2f})"
    )
    console.print(f"wrote heads.csv, accuracy.csv, search.csv, items.csv, run.json, calibration.html to {folder} ({info['wall_seconds']} s)")


def calibrate_act(
    task: str = typer.Option("sentiment", "--task", help="Shipped task (sentiment, mcq) or a .jsonl task file."),
    model: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    out: Path = typer.Option(Path("runs/calibrate-act"), "--out", help="Output folder."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Fixed heads LAYER.HEAD,... (default: greedy search)."),
    beta: float = typer.Option(0.4, "--beta", help="Fraction of sink attention kept, in (0, 1]."),
    tau: float = typer.Option(0.1, "--tau", help="Sink threshold on recv_mean."),
    min_queries: int = typer.Option(16, "--min-queries", help="Keys seen by fewer queries are not sinks (1 = paper exactly)."),
    include_first: bool = typer.Option(False, "--include-first", help="Also scale the first sink (ACT keeps it)."),
    candidates: int = typer.Option(12, "--candidates", help="Heads tried by the greedy search (strongest hidden sinks first)."),
    batch_size: int = typer.Option(20, "--batch-size", help="Prompts per forward pass."),
    backend: str = typer.Option("auto", "--backend", help="interp.kernels backend for the sink statistics."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore finished steps in --out and start over."),
) -> None:
    """ACT (Yu et al. 2024): search heads on the calibration split, report held-out accuracy before/after."""
    _calibrate("act", model=model, task=task, out=out, heads=heads, fresh=fresh, beta=beta, tau=tau,
               min_queries=min_queries, include_first=include_first, n_candidates=candidates,
               batch_size=batch_size, backend=backend)


def calibrate_zerotune(
    task: str = typer.Option("sentiment", "--task", help="Shipped task (sentiment, mcq) or a .jsonl task file."),
    model: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    out: Path = typer.Option(Path("runs/calibrate-zerotune"), "--out", help="Output folder."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Heads LAYER.HEAD,... to scale (default: every head)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Fixed gamma > 0 (default: search --gammas)."),
    gammas: str = typer.Option("0.25,0.5,0.75,1.5,2,4", "--gammas", help="Grid of gammas searched on the calibration split."),
    batch_size: int = typer.Option(20, "--batch-size", help="Prompts per forward pass."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore finished steps in --out and start over."),
) -> None:
    """ZeroTuning (initial-token scaling): choose gamma on the calibration split, report held-out accuracy."""
    _calibrate("zerotune", model=model, task=task, out=out, heads=heads, fresh=fresh, gamma=gamma,
               gammas=_parse_floats(gammas, "--gammas"), batch_size=batch_size)


def register(groups) -> None:
    groups["calibrate"].command("act")(calibrate_act)
    groups["calibrate"].command("zerotune")(calibrate_zerotune)

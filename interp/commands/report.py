"""`interp report`: every analysis at small sizes on one model, written as one HTML page.

A thin layer over `interp.report.report`: flags map onto `ReportConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interp.experiments.flags import parse_out

__all__ = ["register", "report"]


def report(
    model: Optional[str] = typer.Option(
        None, "--model", help="HF hub id or local folder (default: embedded SmolLM2-135M-Instruct)."
    ),
    out: Path = typer.Option(
        Path("out/report"), "--out", parser=parse_out, help="Report folder; DIR/index.html is the page."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Smallest sizes: a first look in about a minute (noisier numbers)."
    ),
    no_png: bool = typer.Option(False, "--no-png", help="Do not write PNGs of static figures (HTML only)."),
) -> None:
    """Run every analysis at small sizes on MODEL (each experiment with a report setting); write OUT/index.html."""
    from rich.console import Console

    from interp.experiments.flags import launch
    from interp.report import ReportConfig
    from interp.report import report as run

    console = Console(stderr=True)
    result = run(model, out, ReportConfig(quick=quick, png=not no_png), console=console, launch=launch())
    typer.echo(str(result.index))


def register(groups) -> None:
    groups["app"].command("report")(report)

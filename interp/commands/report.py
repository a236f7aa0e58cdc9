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
    image: Optional[str] = typer.Option(
        None,
        "--image",
        help="Write each static figure in these formats beside its HTML, e.g. png,svg,pdf, or none "
        "(default: PNG where an image backend works).",
    ),
    no_png: bool = typer.Option(False, "--no-png", hidden=True, help="Same as --image none."),
) -> None:
    """Run every analysis at small sizes on MODEL (each experiment with a report setting); write OUT/index.html."""
    from rich.console import Console

    from interp.errors import InterpError
    from interp.experiments.flags import launch
    from interp.plots.export import image_backend_problem, parse_image_formats
    from interp.report import ReportConfig
    from interp.report import report as run

    images = parse_image_formats(image)
    problem = image_backend_problem() if images else None
    if problem is not None:
        raise InterpError(f"--image {','.join(images)}: {problem}")
    config = ReportConfig(quick=quick, png=image is None and not no_png, images=images)
    console = Console(stderr=True)
    result = run(model, out, config, console=console, launch=launch())
    typer.echo(str(result.index))


def register(groups) -> None:
    groups["app"].command("report")(report)

"""`interp patch overlap`: compare the circuits of two patching runs (Merullo et al. 2023).

It reads two folders written by ``interp patch ioi|colored-objects|pairs`` (patch.csv and the
result's layout in run.json) and loads no model, so it is a plain command rather than an
experiment; the patching commands themselves are `interp.experiments.patching`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interp.analyses.patching import PatchResult
from interp.experiments.flags import parse_out

__all__ = ["register", "patch_overlap", "load_run"]


def load_run(folder: Path) -> PatchResult:
    """The `PatchResult` stored in a folder written by `interp patch ioi|colored-objects`."""
    import pandas as pd

    from interp.errors import InterpError

    folder = Path(folder)
    csv, meta = folder / "patch.csv", folder / "run.json"
    if not csv.is_file() or not meta.is_file():
        raise InterpError(
            f"{folder} has no patch.csv and run.json: pass a folder written by `interp patch ioi` or `colored-objects`"
        )
    redo = "re-run `interp patch` into that folder"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:  # not JSON, not UTF-8 (UnicodeDecodeError), unreadable
        raise InterpError(f"{meta} cannot be read as JSON ({_cause(err)}): {redo}") from None
    if not isinstance(info, dict) or not isinstance(info.get("result"), dict):
        raise InterpError(f"{meta} is not the run.json of a patching run (no result layout in it): {redo}")
    try:
        table = pd.read_csv(csv)
        return PatchResult.from_dataframe(table, info["result"])
    except (ValueError, KeyError, TypeError, IndexError, OSError) as err:  # empty or damaged patch.csv
        raise InterpError(f"{csv} is not the patch.csv of a patching run ({_cause(err)}): {redo}") from None


def _cause(err: BaseException) -> str:
    """An exception in a few words for a one-line message."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__


def patch_overlap(
    run_a: Path = typer.Argument(..., help="Folder of the first patching run."),
    run_b: Path = typer.Argument(..., help="Folder of the second patching run."),
    top: int = typer.Option(10, "--top", min=1, help="Circuit size: the top-K heads by |score| of each run."),
    out: Optional[Path] = typer.Option(
        None, "--out", parser=parse_out, help="Optional folder for overlap.csv, overlap.json and overlap.html."
    ),
    image: Optional[str] = typer.Option(
        None,
        "--image",
        help="Also write the figure as PNG, SVG and/or PDF beside its HTML in --out, e.g. --image png,svg,pdf "
        "(default: HTML only).",
    ),
) -> None:
    """Overlap of two runs' circuits (Merullo et al. 2023): the share of top-K heads found in both."""
    from rich.console import Console

    from interp.analyses.patching import circuit_overlap, head_scores
    from interp.errors import InterpError
    from interp.experiments import Store
    from interp.plots.export import image_backend_problem, parse_image_formats
    from interp.plots.patching import overlap_figure

    images = parse_image_formats(image)
    if images and out is None:
        raise InterpError(f"--image {','.join(images)} writes beside the figure's HTML: give --out DIR too")
    problem = image_backend_problem() if images else None
    if problem is not None:
        raise InterpError(f"--image {','.join(images)}: {problem}")
    a, b = load_run(run_a), load_run(run_b)
    if a.model and b.model and a.model != b.model:
        raise InterpError(f"the runs are of different models ({a.model} vs {b.model}): compare runs of one model")
    ov = circuit_overlap(a, b, top=top)
    store = (
        Store(out, progress=False, images=images, command="patch overlap") if out is not None else None
    )  # refused before printing
    try:
        console = Console()
        console.print(
            f"top-{top} circuits of {a.task} ({run_a}) and {b.task} ({run_b}): {len(ov.shared)} shared heads, "
            f"share {ov.share:.0%}, Jaccard {ov.jaccard:.2f}"
        )
        console.print("shared: " + (", ".join(f"L{layer}H{head}" for layer, head in ov.shared) or "none"))
        if store is not None:  # written through a Store, as every command's files
            store.write_table("overlap", ov.to_dataframe())
            store.write_json("overlap", {
                "run_a": str(run_a), "run_b": str(run_b), "task_a": ov.task_a, "task_b": ov.task_b, "top": top,
                "share": ov.share, "jaccard": ov.jaccard, "shared": [list(h) for h in ov.shared],
                "heads_a": [list(h) for h in ov.heads_a], "heads_b": [list(h) for h in ov.heads_b],
            })  # fmt: skip
            store.write_figures({"overlap": overlap_figure(ov, head_scores(a), head_scores(b))})
            console.print(f"wrote {', '.join(store.written)} to {store.folder}")
    except BaseException:
        if store is not None:
            store.close(failed=True)
        raise
    if store is not None:
        store.close()


def register(groups) -> None:
    groups["patch"].command("overlap")(patch_overlap)

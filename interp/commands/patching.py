"""`interp patch ioi|colored-objects|pairs|overlap`: circuit patching from the command line.

Thin typer layer: flags map onto `interp.analyses.patching.PatchConfig`, one call to
`run_patching`, then patch.csv (layer, head, pos, pos_label, score; head/pos empty where they do
not apply), run.json (task accuracy, clean/corrupted logit differences, settings) and patch.html
(heatmaps) are written into --out. `pairs FILE.jsonl` runs your own prompt pairs (one
{"clean", "corrupt", "correct", "wrong"} per line) with the same flags and outputs. Activation
patches are appended to patch_log.jsonl pass by pass, so an interrupted run resumes where it
stopped when re-run with the same --out (``--fresh`` starts over). `overlap` reads two such
folders and compares their circuits.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "patch_ioi", "patch_colored_objects", "patch_pairs", "patch_overlap", "parse_layers", "load_run"]

_MODEL = typer.Option(None, "--model", help="HF hub id or local folder (default: embedded SmolLM2-135M-Instruct).")
_N = typer.Option(16, "--n", help="Prompts (the metric is averaged over them).")
_SEED = typer.Option(0, "--seed", help="Task generator seed.")
_TARGET = typer.Option("head_out", "--target", help="head_out | q | k | v | resid_pre | attn_out | mlp_out.")
_METHOD = typer.Option("activation", "--method", help="activation | attribution.")
_METRIC = typer.Option("score", "--metric", help="score (normalised logit difference) | logit_diff | kl.")
_BY_POS = typer.Option(None, "--by-pos/--all-pos", help="Patch each position separately (default: yes for resid/attn/mlp, no for heads).")
_LAYERS = typer.Option(None, "--layers", help="Layers to patch, e.g. 0-5,10 (default: all).")
_ROWS = typer.Option(None, "--batch-rows", help="Rows (patch copies x prompts) per forward pass (default: keep one pass near 256 MiB).")
_COMPARE = typer.Option(False, "--compare", help="With --method attribution: also run activation patching and report their correlation.")
_BACKEND = typer.Option("hf", "--backend", help="hf, or tl (TransformerLens bridge; slower).")
_FRESH = typer.Option(False, "--fresh", help="Ignore patches finished by an earlier run in --out and start over.")


def parse_layers(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """'0-3,10' -> (0, 1, 2, 3, 10); None -> None."""
    from interp.errors import InterpError

    if text is None:
        return None
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError as err:
            raise InterpError(f"--layers takes layers and ranges like 0-5,10; got {part!r}") from err
    if not out:
        raise InterpError("--layers is empty: give layers like 0-5,10, or omit it for all layers")
    return tuple(out)


def _run(
    task: str, *, model, n, seed, target, method, metric, by_pos, layers, batch_rows, compare, out, backend,
    fresh=False, pairs: Optional[Path] = None,
) -> None:
    from rich.console import Console

    from interp.analyses.patching import PatchConfig, run_patching, top_heads
    from interp.analyses.tasks import read_pairs
    from interp.distributed import open_parted_log, rank_model, world
    from interp.plots.patching import figures_html, patch_figure, position_heatmap
    from interp.runs import atomic_write_csv, atomic_write_json, atomic_write_text, prepare_out_dir, run_info

    started = time.time()
    if pairs is not None:
        n = len(read_pairs(pairs)[0])  # a malformed pairs file fails before the model loads
    config = PatchConfig(
        task=task, n=n, seed=seed, pairs=None if pairs is None else str(pairs), target=target, method=method,
        metric=metric, by_pos=by_pos, layers=parse_layers(layers), batch_rows=batch_rows, compare=compare,
    )
    config.validate()  # bad flags fail before the model loads (token checks need the model's tokenizer)
    folder = prepare_out_dir(out)
    console = Console(stderr=True)
    settings = {k: getattr(config, k) for k in config.__dataclass_fields__ if k != "progress"}
    # what the patch values depend on: a re-run with other settings (or an edited pairs file) starts a new log
    provenance = {"model": model, "backend": backend, **{k: v for k, v in settings.items() if k not in ("batch_rows", "pairs")}}
    if pairs is not None:
        provenance["pairs_sha256"] = hashlib.sha256(Path(pairs).read_bytes()).hexdigest()
    log = open_parted_log(folder / "patch_log.jsonl", provenance, fresh=fresh)  # one part per rank under torchrun/srun
    if len(log):
        console.print(f"resuming: {sum(len(r['patches']) for r in log)} patches already done in {folder}")
    lm = rank_model(model, backend=backend)
    result = run_patching(lm, config, log=log)
    if not world().main:
        return  # every rank holds the merged result; rank 0 writes it
    figures = [patch_figure(result)] + ([position_heatmap(result)] if "pos" in result.axes else [])
    if result.activation is not None:
        figures.append(patch_figure(result.activation))
    atomic_write_csv(folder / "patch.csv", result.to_dataframe())
    if result.activation is not None:
        atomic_write_csv(folder / "patch_activation.csv", result.activation.to_dataframe())
    atomic_write_text(folder / "patch.html", figures_html(figures, title=f"interp patch {result.task}"))
    info = run_info(lm, settings=settings, started=started)
    info["summary"] = {
        "task": result.task,
        **result.baseline.as_dict(),
        "top_heads": [{"layer": a, "head": h, "score": s} for a, h, s in top_heads(result, 10)] if "head" in result.axes else None,
        "correlation_attribution_activation": result.correlation,
    }
    info["result"] = result.meta()  # what `interp patch overlap` reads back with patch.csv
    atomic_write_json(folder / "run.json", info)
    b = result.baseline
    console.print(
        f"[bold]{lm.name}[/] {result.task} (n={b.n}): clean accuracy {b.clean_accuracy:.0%} (LD > 0; top-1 {b.clean_top1:.0%}), "
        f"mean LD clean {b.clean_logit_diff:.3f}, corrupted {b.corrupt_logit_diff:.3f}"
    )
    if "head" in result.axes:
        tops = ", ".join(f"L{a}H{h} {s:+.3f}" for a, h, s in top_heads(result, 5))
        console.print(f"top heads ({result.method}, {result.metric}): {tops}")
    if result.correlation is not None:
        console.print(f"correlation attribution vs activation: r = {result.correlation:.3f}")
    console.print(f"wrote patch.csv, run.json, patch.html to {folder} ({info['wall_seconds']} s)")


def patch_ioi(
    model: Optional[str] = _MODEL, n: int = _N, seed: int = _SEED, target: str = _TARGET, method: str = _METHOD,
    metric: str = _METRIC, by_pos: Optional[bool] = _BY_POS, layers: Optional[str] = _LAYERS,
    batch_rows: Optional[int] = _ROWS, compare: bool = _COMPARE,
    out: Path = typer.Option(Path("runs/patch-ioi"), "--out", help="Output folder."), backend: str = _BACKEND,
    fresh: bool = _FRESH,
) -> None:
    """Patch the IOI task (Wang et al. 2022): writes patch.csv, run.json and patch.html into OUT."""
    _run("ioi", model=model, n=n, seed=seed, target=target, method=method, metric=metric, by_pos=by_pos,
         layers=layers, batch_rows=batch_rows, compare=compare, out=out, backend=backend, fresh=fresh)


def patch_colored_objects(
    model: Optional[str] = _MODEL, n: int = _N, seed: int = _SEED, target: str = _TARGET, method: str = _METHOD,
    metric: str = _METRIC, by_pos: Optional[bool] = _BY_POS, layers: Optional[str] = _LAYERS,
    batch_rows: Optional[int] = _ROWS, compare: bool = _COMPARE,
    out: Path = typer.Option(Path("runs/patch-colored-objects"), "--out", help="Output folder."), backend: str = _BACKEND,
    fresh: bool = _FRESH,
) -> None:
    """Patch the Colored Objects task (Merullo et al. 2023): writes patch.csv, run.json and patch.html into OUT."""
    _run("colored-objects", model=model, n=n, seed=seed, target=target, method=method, metric=metric, by_pos=by_pos,
         layers=layers, batch_rows=batch_rows, compare=compare, out=out, backend=backend, fresh=fresh)


def patch_pairs(
    file: Path = typer.Argument(..., help='JSONL file: one {"clean", "corrupt", "correct", "wrong"} object per line.'),
    model: Optional[str] = _MODEL, target: str = _TARGET, method: str = _METHOD,
    metric: str = _METRIC, by_pos: Optional[bool] = _BY_POS, layers: Optional[str] = _LAYERS,
    batch_rows: Optional[int] = _ROWS, compare: bool = _COMPARE,
    out: Path = typer.Option(Path("runs/patch-pairs"), "--out", help="Output folder."), backend: str = _BACKEND,
    fresh: bool = _FRESH,
) -> None:
    """Patch your own prompt pairs: each line of FILE holds a clean prompt, its corrupted version
    (same token length), and the correct and wrong one-token answers (e.g. " Mary", " John").
    Writes patch.csv, run.json and patch.html into OUT, as for the built-in tasks."""
    _run("pairs", model=model, n=0, seed=0, target=target, method=method, metric=metric, by_pos=by_pos,
         layers=layers, batch_rows=batch_rows, compare=compare, out=out, backend=backend, fresh=fresh,
         pairs=file)


def load_run(folder: Path):
    """The `PatchResult` stored in a folder written by `interp patch ioi|colored-objects`."""
    import pandas as pd

    from interp.analyses.patching import PatchResult
    from interp.errors import InterpError

    folder = Path(folder)
    csv, meta = folder / "patch.csv", folder / "run.json"
    if not csv.is_file() or not meta.is_file():
        raise InterpError(f"{folder} has no patch.csv and run.json: pass a folder written by `interp patch ioi` or `colored-objects`")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        result_meta = info["result"]
    except (json.JSONDecodeError, KeyError) as err:
        raise InterpError(f"{meta} is not the run.json of a patching run: re-run `interp patch` into that folder") from err
    return PatchResult.from_dataframe(pd.read_csv(csv), result_meta)


def patch_overlap(
    run_a: Path = typer.Argument(..., help="Folder of the first patching run."),
    run_b: Path = typer.Argument(..., help="Folder of the second patching run."),
    top: int = typer.Option(10, "--top", min=1, help="Circuit size: the top-K heads by |score| of each run."),
    out: Optional[Path] = typer.Option(None, "--out", help="Optional folder for overlap.csv, overlap.json and overlap.html."),
) -> None:
    """Overlap of two runs' circuits (Merullo et al. 2023): the share of top-K heads found in both."""
    from rich.console import Console

    from interp.analyses.patching import circuit_overlap, head_scores
    from interp.errors import InterpError
    from interp.plots.export import save_figure
    from interp.plots.patching import overlap_figure
    from interp.runs import atomic_write_csv, atomic_write_json, prepare_out_dir

    a, b = load_run(run_a), load_run(run_b)
    if a.model and b.model and a.model != b.model:
        raise InterpError(f"the runs are of different models ({a.model} vs {b.model}): compare runs of one model")
    ov = circuit_overlap(a, b, top=top)
    console = Console()
    console.print(
        f"top-{top} circuits of {a.task} ({run_a}) and {b.task} ({run_b}): {len(ov.shared)} shared heads, "
        f"share {ov.share:.0%}, Jaccard {ov.jaccard:.2f}"
    )
    console.print("shared: " + (", ".join(f"L{layer}H{head}" for layer, head in ov.shared) or "none"))
    if out is not None:
        folder = prepare_out_dir(out)
        atomic_write_csv(folder / "overlap.csv", ov.to_dataframe())
        atomic_write_json(folder / "overlap.json", {
            "run_a": str(run_a), "run_b": str(run_b), "task_a": ov.task_a, "task_b": ov.task_b, "top": top,
            "share": ov.share, "jaccard": ov.jaccard, "shared": [list(h) for h in ov.shared],
            "heads_a": [list(h) for h in ov.heads_a], "heads_b": [list(h) for h in ov.heads_b],
        })
        save_figure(overlap_figure(ov, head_scores(a), head_scores(b)), folder / "overlap.html")
        console.print(f"wrote overlap.csv, overlap.json, overlap.html to {folder}")


def register(groups) -> None:
    groups["patch"].command("ioi")(patch_ioi)
    groups["patch"].command("colored-objects")(patch_colored_objects)
    groups["patch"].command("pairs")(patch_pairs)
    groups["patch"].command("overlap")(patch_overlap)

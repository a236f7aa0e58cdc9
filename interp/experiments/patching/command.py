"""`interp patch ioi|colored-objects|pairs`: the patching experiments as the CLI and the report see them.

Flags map onto `PatchConfig`; the run writes into --out: patch.csv (layer, head, pos, pos_label,
score; head/pos empty where they do not apply), patch_activation.csv (with --compare), patch.html
(the heatmaps on one page), run.json (settings, the task's accuracy and logit differences, the
top heads, and the result's layout that `interp patch overlap` reads back) and patch_log.jsonl
(activation patches pass by pass: a re-run with the same --out resumes, ``--fresh`` starts
over). The model backend is the launch option: ``interp --model-backend tl patch ioi``.

The report's stage "patching" is `interp patch ioi` at 4 prompts plus the resid_pre x position
map by attribution patching (``position_map``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import typer

from interp.analyses.patching.circuits import top_heads
from interp.analyses.patching.config import PatchConfig
from interp.analyses.patching.results import PatchResult
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, execute
from interp.experiments.patching.runner import run

__all__ = [
    "EXPERIMENTS",
    "describe",
    "tables",
    "figures",
    "report_figures",
    "report_config",
    "patch_ioi",
    "patch_colored_objects",
    "patch_pairs",
]

_N = typer.Option(16, "--n", help="Prompts (the metric is averaged over them).")
_SEED = typer.Option(0, "--seed", help="Task generator seed.")
_TARGET = typer.Option("head_out", "--target", help="head_out | q | k | v | resid_pre | attn_out | mlp_out.")
_METHOD = typer.Option("activation", "--method", help="activation | attribution.")
_METRIC = typer.Option("score", "--metric", help="score (normalised logit difference) | logit_diff | kl.")
_BY_POS = typer.Option(
    None, "--by-pos/--all-pos", help="Patch each position separately (default: yes for resid/attn/mlp, no for heads)."
)
_LAYERS = typer.Option(None, "--layers", help="Layers to patch, e.g. 0-5,10 (default: all).")
_ROWS = typer.Option(
    None, "--batch-rows", help="Rows (patch copies x prompts) per forward pass (default: keep one pass near 256 MiB)."
)
_COMPARE = typer.Option(
    False, "--compare", help="With --method attribution: also run activation patching and report their correlation."
)

_PAPERS = {"ioi": "Wang et al. 2022", "colored-objects": "Merullo et al. 2023"}
_METRIC_NOTE = {
    "score": "normalised: 1 = restores the clean logit difference, 0 = no effect",
    "logit_diff": "logit difference after the patch",
    "kl": "KL divergence from the clean next-token distribution",
}


# --------------------------------------------------------------------------------------------
# What a result shows
# --------------------------------------------------------------------------------------------


def _strongest(result: PatchResult) -> str:
    """Where a residual-site result is largest in |score|: "layer L at 'label' (+0.12)"."""
    s = np.asarray(result.scores, dtype=float)
    if not np.isfinite(s).any():
        return ""
    at = np.unravel_index(np.nanargmax(np.abs(s)), s.shape)
    where = f"layer {at[0]}"
    if "pos" in result.axes:
        p = at[-1]
        where += f" at '{result.pos_labels[p] if result.pos_labels else p}'"
    return f"{where} ({s[at]:+.2f})"


def describe(result: PatchResult) -> str:
    """The task's baseline and what patching found, in two or three sentences."""
    b = result.baseline
    paper = f" ({_PAPERS[result.task]})" if result.task in _PAPERS else ""
    answer = "the right name" if result.task == "ioi" else "the correct answer"
    text = (
        f"{result.task.upper()} on {b.n} prompts{paper}: the model prefers {answer} on {b.clean_accuracy:.0%} of clean "
        f"prompts (mean logit difference {b.clean_logit_diff:.2f}; corrupted {b.corrupt_logit_diff:.2f})."
    )
    if "head" in result.axes:
        what = "output" if result.target == "head_out" else result.target
        how = (
            f"Patching each head's clean {what} into the corrupted run"
            if result.method == "activation"
            else f"Estimating each head's clean-{what} patch by attribution patching (first order)"
        )
        text += (
            f" {how}, the heads with the largest |{result.metric}| ({_METRIC_NOTE.get(result.metric, result.metric)}): "
            + ", ".join(f"L{l}H{h} ({v:+.2f})" for l, h, v in top_heads(result, 5))
            + "."
        )
    elif _strongest(result):
        text += f" Patching {result.target} ({result.method} patching, {result.metric}), the strongest patch is {_strongest(result)}."
    if result.correlation is not None and np.isfinite(result.correlation):
        text += f" Attribution vs activation patching: r = {result.correlation:.2f}."
    if result.position_map is not None and _strongest(result.position_map):
        text += (
            " In the residual stream (attribution patching by position) the strongest patch is "
            f"{_strongest(result.position_map)}."
        )
    return text


def tables(result: PatchResult) -> dict[str, Any]:
    """The report's tables: heads (or patch, for a residual target), activation (with compare),
    resid_pre (with the position map)."""
    out = {"heads" if "head" in result.axes else "patch": result.to_dataframe()}
    if result.activation is not None:
        out["activation"] = result.activation.to_dataframe()
    if result.position_map is not None:
        out["resid_pre"] = result.position_map.to_dataframe()
    return out


def figures(result: PatchResult) -> dict[str, Any]:
    """The heatmaps of patch.html: the main one, layer x position (by position), the activation result."""
    from interp.plots.patching import patch_figure, position_heatmap

    out = {"patch": patch_figure(result)}
    if "pos" in result.axes:
        out["patch_by_position"] = position_heatmap(result)
    if result.activation is not None:
        out["patch_activation"] = patch_figure(result.activation)
    if result.position_map is not None:
        out["resid_pre_by_position"] = patch_figure(result.position_map)
    return out


def report_figures(result: PatchResult) -> dict[str, Any]:
    """The report's figures: the main heatmap and the resid_pre x position map."""
    from interp.plots.patching import patch_figure

    out = {f"{result.target}_{'by_position' if 'pos' in result.axes else 'grid'}": patch_figure(result)}
    if result.position_map is not None:
        out["resid_pre_by_position"] = patch_figure(result.position_map)
    return out


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def check(config: PatchConfig) -> None:
    """Before the model loads: a malformed pairs file fails with its line number."""
    if config.pairs is not None:
        from interp.datasets.tasks import read_pairs

        read_pairs(config.pairs)


def cli_tables(result: PatchResult) -> dict[str, Any]:
    """The command's tables: patch.csv (and patch_activation.csv with --compare)."""
    out = {"patch": result.to_dataframe()}
    if result.activation is not None:
        out["patch_activation"] = result.activation.to_dataframe()
    return out


def pages(result: PatchResult) -> dict[str, str]:
    """patch.html: every heatmap of `figures` on one page."""
    from interp.plots.patching import figures_html

    return {"patch": figures_html(list(figures(result).values()), title=f"interp patch {result.task}")}


def record(result: PatchResult) -> dict[str, Any]:
    """run.json's "result": the layout `interp patch overlap` reads back with patch.csv."""
    return {"result": result.meta()}


MAX_PROMPTS = 1024  # --n: the baseline runs every prompt in one forward pass, so memory grows with n


def _config(task: str, *, layers: Optional[str], pairs: Optional[Path] = None, **settings: Any) -> PatchConfig:
    """The command's `PatchConfig`; flags that would be ignored or that no run can afford are refused."""
    flags.only_with("--compare", settings["compare"], "--method attribution", settings["method"] == "attribution")
    if task != "pairs":
        flags.check_range(settings["n"], "--n", 1, MAX_PROMPTS, "every prompt goes through the model in one batch")
    flags.check_range(settings["batch_rows"], "--batch-rows", 1)
    return PatchConfig(
        task=task, layers=flags.parse_layers(layers), pairs=None if pairs is None else str(pairs), **settings
    )


def patch_ioi(
    model: Optional[str] = flags.model_option(),
    n: int = _N,
    seed: int = _SEED,
    target: str = _TARGET,
    method: str = _METHOD,
    metric: str = _METRIC,
    by_pos: Optional[bool] = _BY_POS,
    layers: Optional[str] = _LAYERS,
    batch_rows: Optional[int] = _ROWS,
    compare: bool = _COMPARE,
    out: Path = flags.out_option("runs/patch-ioi"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Patch the IOI task (Wang et al. 2022): writes patch.csv, run.json and patch.html into OUT."""
    config = _config("ioi", n=n, seed=seed, target=target, method=method, metric=metric, by_pos=by_pos,
                     layers=layers, batch_rows=batch_rows, compare=compare)  # fmt: skip
    execute(IOI, config, launch=flags.launch(), model=model, out=out, fresh=fresh)


def patch_colored_objects(
    model: Optional[str] = flags.model_option(),
    n: int = _N,
    seed: int = _SEED,
    target: str = _TARGET,
    method: str = _METHOD,
    metric: str = _METRIC,
    by_pos: Optional[bool] = _BY_POS,
    layers: Optional[str] = _LAYERS,
    batch_rows: Optional[int] = _ROWS,
    compare: bool = _COMPARE,
    out: Path = flags.out_option("runs/patch-colored-objects"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Patch the Colored Objects task (Merullo et al. 2023): writes patch.csv, run.json and patch.html into OUT."""
    config = _config("colored-objects", n=n, seed=seed, target=target, method=method, metric=metric, by_pos=by_pos,
                     layers=layers, batch_rows=batch_rows, compare=compare)  # fmt: skip
    execute(COLORED_OBJECTS, config, launch=flags.launch(), model=model, out=out, fresh=fresh)


def patch_pairs(
    file: Path = typer.Argument(..., help='JSONL file: one {"clean", "corrupt", "correct", "wrong"} object per line.'),
    model: Optional[str] = flags.model_option(),
    target: str = _TARGET,
    method: str = _METHOD,
    metric: str = _METRIC,
    by_pos: Optional[bool] = _BY_POS,
    layers: Optional[str] = _LAYERS,
    batch_rows: Optional[int] = _ROWS,
    compare: bool = _COMPARE,
    out: Path = flags.out_option("runs/patch-pairs"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Patch your own prompt pairs: each line of FILE holds a clean prompt, its corrupted version
    (same token length), and the correct and wrong one-token answers (e.g. " Mary", " John").
    Writes patch.csv, run.json and patch.html into OUT, as for the built-in tasks."""
    from interp.datasets.tasks import read_pairs

    n = len(read_pairs(file)[0])  # a malformed pairs file fails before the model loads
    config = _config("pairs", pairs=file, n=n, seed=0, target=target, method=method, metric=metric, by_pos=by_pos,
                     layers=layers, batch_rows=batch_rows, compare=compare)  # fmt: skip
    execute(PAIRS, config, launch=flags.launch(), model=model, out=out, fresh=fresh)


# --------------------------------------------------------------------------------------------
# The report and the registry
# --------------------------------------------------------------------------------------------

_REPORT_SIZES = {False: {"task": "ioi", "n": 4}, True: {"task": "ioi", "n": 4, "method": "attribution"}}


def report_config(quick: bool, earlier: Mapping[str, Any]) -> PatchConfig:
    """The report's sizes: IOI head outputs on 4 prompts (quick: by attribution), plus the
    resid_pre x position map by attribution patching."""
    return PatchConfig(**_REPORT_SIZES[quick], position_map=True)


_COMMON = dict(
    config=PatchConfig,
    run=run,
    tables=cli_tables,
    figures=lambda result: {},
    pages=pages,
    record=record,
    describe=describe,
    check=check,
    quick={k: v for k, v in _REPORT_SIZES[True].items() if k != "task"},  # --quick: the report's sizes, its own task
    images=figures,
)  # the command writes one patch.html page; the report draws report_figures
IOI = Experiment(
    name="patching", title="IOI circuit patching", command=("patch", "ioi"), cli=patch_ioi,
    report=InReport(report_config, order=40, tables=tables, figures=report_figures), **_COMMON,
)  # fmt: skip
COLORED_OBJECTS = Experiment(
    name="patch_colored_objects", title="Colored Objects circuit patching", command=("patch", "colored-objects"),
    cli=patch_colored_objects, **_COMMON,
)  # fmt: skip
PAIRS = Experiment(
    name="patch_pairs", title="Circuit patching of prompt pairs", command=("patch", "pairs"), cli=patch_pairs, **_COMMON,
)  # fmt: skip
EXPERIMENTS = (IOI, COLORED_OBJECTS, PAIRS)

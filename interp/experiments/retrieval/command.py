"""`interp score retrieval`: the command, what it writes, and the report's retrieval stage.

`EXPERIMENT` joins `interp.experiments.retrieval.runner.run` to the CLI and the report: the
finding in words (`describe`), the tables and figures, the run.json fields (`record`) and the
input files read before the model loads (`check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from interp.analyses.retrieval import RetrievalConfig, RetrievalResult
from interp.datasets.haystack import load_haystack
from interp.datasets.needles import load_needles
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, execute, report_sizes
from interp.experiments.retrieval.runner import run

__all__ = ["EXPERIMENT", "describe"]


def describe(result: RetrievalResult) -> str:
    """The finding: the share of retrieval heads, the top heads, and the causal check."""
    cfg, s = result.config, result.summary()
    n_ret = int((result.scores > cfg.threshold).sum())
    top = result.top(5)
    grid = f"{len(cfg.lengths)} lengths ({', '.join(map(str, cfg.lengths))} tokens) x {len(cfg.depths)} depths"
    text = (
        f"{n_ret} of {result.scores.size} heads ({result.share:.1%}) are retrieval heads (copy score > {cfg.threshold}; Wu et al. "
        f"2024 report under 5%), over {result.n_samples} of {len(result.samples)} needle samples the model answered "
        f"({grid}, mean recall {s['mean_recall']:.2f})."
    )
    if top:
        text += " Top heads: " + ", ".join(f"L{layer}H{head} ({v:.2f})" for layer, head, v in top) + "."
    m = result.masking
    if m is not None:
        text += (
            f" Masking the top {m.k_top} heads drops needle recall from {m.recall_unmasked:.2f} to {m.recall_top:.2f}; "
            f"masking {m.k_random} random heads gives {m.recall_random_mean:.2f}"
            + (f" (sd {m.recall_random_std:.2f} over {len(m.seeds)} seeds)." if len(m.seeds) > 1 else ".")
        )
    return text


def record(result: RetrievalResult) -> dict:
    """run.json's fields beside the summary: the seconds per stage and what was resumed, and the
    causal check's conditions (or why it was skipped)."""
    out: dict[str, Any] = {"timings": result.timings}
    if result.masking is not None:
        out["masking"] = result.masking.to_dataframe().to_dict(orient="records")
    elif result.config.mask:
        out["masking"] = "skipped: no sample counted, so there are no top heads to mask"
    return out


def tables(result: RetrievalResult) -> dict[str, Any]:
    return {"heads": result.to_dataframe(), "samples": result.samples_dataframe()}


def report_tables(result: RetrievalResult) -> dict[str, Any]:
    out = tables(result)
    if result.masking is not None:
        out["masking"] = result.masking.to_dataframe()
    return out


def figures(result: RetrievalResult) -> dict[str, Any]:
    from interp.plots.retrieval import figure

    return {"retrieval_heads": figure(result)}


def report_figures(result: RetrievalResult) -> dict[str, Any]:
    from interp.plots import retrieval as rp

    out = {"retrieval_scores": rp.figure(result)}
    if result.masking is not None:
        out["masking_check"] = rp.masking_figure(result)
    return out


def check(config: RetrievalConfig) -> None:
    """The input files, read before the model loads: needles and haystack."""
    load_needles(config.needles)
    if config.haystack:
        load_haystack(config.haystack)


def _list(text: Optional[str], flag: str, kind: type) -> Optional[tuple]:
    """``--lengths``/``--depths``: values separated by commas or spaces; None stays None."""
    if text is None:
        return None
    parse = flags.parse_ints if kind is int else flags.parse_floats
    values = parse(text.replace(" ", ","), flag)
    if not values:
        raise InterpError(f"{flag} is empty: give at least one value or omit it")
    return values


def cli(
    model: Optional[str] = flags.model_option(),
    lengths: Optional[str] = typer.Option(
        None,
        "--lengths",
        help="Prompt lengths in tokens, comma-separated (default 512,1024; the paper's grid for SmolLM2: 1024,2048,...,8192).",
    ),
    depths: Optional[str] = typer.Option(
        None, "--depths", help="Needle depths in [0, 1], comma-separated (default 0.1,0.5,0.9; the paper: 0,0.1,...,1)."
    ),
    needles: Optional[Path] = typer.Option(
        None,
        "--needles",
        help='JSONL file, one {"id", "needle", "question", "answer"} per line (default: the shipped 3).',
    ),
    haystack: Optional[list[Path]] = typer.Option(
        None, "--haystack", help="Text file for the haystack; repeat for several (default: Python stdlib docstrings)."
    ),
    mode: str = typer.Option(
        "teacher", "--mode", help="teacher (one forward per sample) or decode (the paper's greedy loop)."
    ),
    response: Optional[str] = typer.Option(
        None,
        "--response",
        help="Teacher forcing feeds the needle sentence ('needle', the default) or only the answer ('answer').",
    ),
    out: Path = typer.Option(
        Path("runs/retrieval"), "--out", parser=flags.parse_out, help="Output folder (re-running with it resumes)."
    ),
    mask: bool = typer.Option(
        True, "--mask/--no-mask", help="Run the causal check (top-K vs random-K heads made uniform)."
    ),
    mask_top: Optional[int] = typer.Option(None, "--mask-top", help="K top heads to mask (default: 5% of heads)."),
    mask_random: Optional[int] = typer.Option(
        None, "--mask-random", help="K random non-retrieval heads to mask (default: same as --mask-top)."
    ),
    seed: Optional[list[int]] = typer.Option(
        None, "--seed", help="Seed of a random-K draw; repeat for several (default 0 1 2)."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Decode mode: step limit (default: the paper's 50)."
    ),
    min_recall: float = typer.Option(
        0.5, "--min-recall", help="ROUGE-1 recall for a sample to count (the paper's 0.5)."
    ),
    threshold: float = typer.Option(0.1, "--threshold", help="Retrieval head: score > threshold (the paper's 0.1)."),
    backend: str = flags.backend_option(),
    share_prefix: bool = typer.Option(
        True,
        "--share-prefix/--no-share-prefix",
        help="Compute each shared token prefix of the grid once and reuse its KV cache (HF backend; same results).",
    ),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Samples per batch below a shared prefix (default: 1 on CPU, 4 on CUDA)."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore finished samples in --out and start over."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every head for retrieval on a needle-in-a-haystack grid, check causally that the top
    heads matter, and write heads.csv, samples.csv, run.json and retrieval_heads.html into OUT."""
    for flag, given in (
        ("--mask-top", mask_top is not None),
        ("--mask-random", mask_random is not None),
        ("--seed", bool(seed)),
    ):
        flags.only_with(flag, given, "--mask", mask)  # the masking check's settings would be ignored
    flags.only_with("--response", response is not None, "--mode teacher", mode == "teacher")
    flags.only_with("--max-new-tokens", max_new_tokens is not None, "--mode decode", mode == "decode")
    defaults = RetrievalConfig()
    config = RetrievalConfig(
        lengths=_list(lengths, "--lengths", int) or defaults.lengths,
        depths=_list(depths, "--depths", float) or defaults.depths,
        needles=str(needles) if needles is not None else None,
        haystack=tuple(str(p) for p in haystack or ()),
        mode=mode, response=defaults.response if response is None else response, min_recall=min_recall,
        max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens, threshold=threshold,
        mask=mask, mask_top=mask_top, mask_random=mask_random, seeds=tuple(seed) if seed else defaults.seeds,
        backend=flags.check_backend(backend), share_prefix=share_prefix, batch_size=batch_size,
    )  # fmt: skip
    execute(EXPERIMENT, config, launch=flags.launch(), model=model, out=out, fresh=fresh, progress=progress)


# Small sizes for the report: {quick: kwargs}.
# The report's small grid: lengths 256 and 512 at depth 0.5, two seeds (quick: 192, no check).
_REPORT_SIZES = {
    False: {"lengths": (256, 512), "depths": (0.5,), "seeds": (0, 1)},
    True: {"lengths": (192,), "depths": (0.5,), "mask": False},
}


EXPERIMENT = Experiment(
    name="retrieval",
    title="Retrieval heads",
    command=("score", "retrieval"),
    config=RetrievalConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    record=record,
    check=check,
    report=InReport(
        report_sizes(RetrievalConfig, _REPORT_SIZES), order=10, tables=report_tables, figures=report_figures
    ),
    quick=_REPORT_SIZES[True],
)

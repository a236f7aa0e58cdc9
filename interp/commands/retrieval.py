"""`interp score retrieval`: retrieval heads by needle-in-a-haystack (Wu et al. 2024).

Thin typer layer: flags map onto `interp.analyses.retrieval.RetrievalConfig`; one call to
`score_retrieval` scores every head (resuming from --out's samples.jsonl) and runs the
masking check; then the heatmap is written next to heads.csv, samples.csv and run.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

__all__ = ["register", "score_retrieval_command"]


def _parse_list(text: Optional[str], flag: str, kind):
    from interp.errors import InterpError

    if text is None:
        return None
    try:
        values = tuple(kind(x) for x in text.replace(",", " ").split())
    except ValueError as err:
        example = "512,1024,2048" if kind is int else "0.1,0.5,0.9"
        raise InterpError(f"{flag} must be comma-separated {'ints' if kind is int else 'numbers'} like {example}; got {text!r}") from err
    if not values:
        raise InterpError(f"{flag} is empty: give at least one value or omit it")
    return values


def score_retrieval_command(
    model: Optional[str] = typer.Option(None, "--model", help="HF hub id or local folder (default: embedded SmolLM2-135M-Instruct)."),
    lengths: Optional[str] = typer.Option(None, "--lengths", help="Prompt lengths in tokens, comma-separated (default 512,1024; the paper's grid for SmolLM2: 1024,2048,...,8192)."),
    depths: Optional[str] = typer.Option(None, "--depths", help="Needle depths in [0, 1], comma-separated (default 0.1,0.5,0.9; the paper: 0,0.1,...,1)."),
    needles: Optional[Path] = typer.Option(None, "--needles", help="JSONL file, one {\"id\", \"needle\", \"question\", \"answer\"} per line (default: the shipped 3)."),
    haystack: Optional[List[Path]] = typer.Option(None, "--haystack", help="Text file for the haystack; repeat for several (default: Python stdlib docstrings)."),
    mode: str = typer.Option("teacher", "--mode", help="teacher (one forward per sample) or decode (the paper's greedy loop)."),
    response: str = typer.Option("needle", "--response", help="Teacher forcing feeds the needle sentence ('needle') or only the answer ('answer')."),
    out: Path = typer.Option(Path("runs/retrieval"), "--out", help="Output folder (re-running with it resumes)."),
    mask: bool = typer.Option(True, "--mask/--no-mask", help="Run the causal check (top-K vs random-K heads made uniform)."),
    mask_top: Optional[int] = typer.Option(None, "--mask-top", help="K top heads to mask (default: 5% of heads)."),
    mask_random: Optional[int] = typer.Option(None, "--mask-random", help="K random non-retrieval heads to mask (default: same as --mask-top)."),
    seed: Optional[List[int]] = typer.Option(None, "--seed", help="Seed of a random-K draw; repeat for several (default 0 1 2)."),
    max_new_tokens: int = typer.Option(50, "--max-new-tokens", help="Decode mode: step limit (the paper's 50)."),
    min_recall: float = typer.Option(0.5, "--min-recall", help="ROUGE-1 recall for a sample to count (the paper's 0.5)."),
    threshold: float = typer.Option(0.1, "--threshold", help="Retrieval head: score > threshold (the paper's 0.1)."),
    backend: str = typer.Option("auto", "--backend", help="interp.kernels backend: auto, reference, torch, triton."),
    share_prefix: bool = typer.Option(True, "--share-prefix/--no-share-prefix", help="Compute each shared token prefix of the grid once and reuse its KV cache (HF backend; same results)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per batch below a shared prefix (default: 1 on CPU, 4 on CUDA)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore finished samples in --out and start over."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every head for retrieval on a needle-in-a-haystack grid, check causally that the top
    heads matter, and write heads.csv, samples.csv, run.json and retrieval_heads.html into OUT."""
    from rich.console import Console

    from interp.analyses.needles import load_needles, read_haystack
    from interp.analyses.retrieval import RetrievalConfig, score_retrieval
    from interp.distributed import rank_model, world
    from interp.plots.export import save_figure
    from interp.plots.retrieval import figure
    from interp.runs import atomic_write_json

    started = time.time()
    defaults = RetrievalConfig()
    config = RetrievalConfig(
        lengths=_parse_list(lengths, "--lengths", int) or defaults.lengths,
        depths=_parse_list(depths, "--depths", float) or defaults.depths,
        needles=str(needles) if needles is not None else None,
        haystack=tuple(str(p) for p in haystack or ()),
        mode=mode,
        response=response,
        max_new_tokens=max_new_tokens,
        min_recall=min_recall,
        threshold=threshold,
        mask=mask,
        mask_top=mask_top,
        mask_random=mask_random,
        seeds=tuple(seed) if seed else defaults.seeds,
        backend=backend,
        share_prefix=share_prefix,
        batch_size=batch_size,
    )
    # Every check that needs no model runs before the (slow) load and before any write.
    config.validate()
    load_needles(config.needles)
    if config.haystack:
        read_haystack(config.haystack)
    console = Console(stderr=True)
    lm = rank_model(model)  # cuda:LOCAL_RANK or --device-map under torchrun/srun
    result = score_retrieval(lm, config, out, fresh=fresh, progress=progress)
    if not world().main:
        return  # rank 0 wrote the merged tables
    save_figure(figure(result), Path(out) / "retrieval_heads.html")
    run_json = Path(out) / "run.json"
    import json

    info = json.loads(run_json.read_text(encoding="utf-8"))
    info["wall_seconds_total"] = round(time.time() - started, 2)
    atomic_write_json(run_json, info)

    s = result.summary()
    if result.n_samples == 0:
        console.print(
            f"[bold red]no sample counted[/]: the model's answers reached ROUGE-1 recall >= {config.min_recall} on none of "
            f"{len(result.samples)} samples, so the scores are undefined (shorter --lengths, or another model)"
        )
    else:
        top = ", ".join(f"{h['layer']}.{h['head']} ({h['score']:.2f})" for h in s["top_heads"][:5])
        console.print(
            f"[bold]{lm.name}[/] ({config.mode}): {result.n_samples}/{len(result.samples)} samples counted; "
            f"{result.share:.1%} of heads score > {config.threshold}; top heads {top}"
        )
    if result.masking is not None:
        m = result.masking
        console.print(
            f"needle recall: unmasked {m.recall_unmasked:.3f}; top-{m.k_top} masked {m.recall_top:.3f}; "
            f"random-{m.k_random} masked {m.recall_random_mean:.3f} ± {m.recall_random_std:.3f} over seeds {list(m.seeds)}"
        )
    console.print(
        f"wrote heads.csv, samples.csv, run.json, retrieval_heads.html to {out} ({info['wall_seconds_total']} s; "
        f"{result.timings['samples_resumed']} samples resumed)"
    )


def register(groups) -> None:
    groups["score"].command("retrieval")(score_retrieval_command)

"""`interp score preplan`: preplan and anchor tokens of responses (Li et al. 2025).

Maps flags onto `interp.analyses.preplan.PreplanConfig`, calls `score_preplan` once per prompt
(one resumable unit of work each, logged in samples.jsonl; shared over the ranks under
torchrun/srun) and writes tokens.csv, heads.csv, run.json and preplan.html into --out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "preplan"]


def _parse_layers(text: Optional[str]):
    from interp.errors import InterpError

    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError as err:
        raise InterpError(f"--layers must be comma-separated ints like 10,15,20; got {text!r}") from err


def preplan(
    model: Optional[str] = typer.Option(None, "--model", help="HF hub id or local folder (default: embedded SmolLM2-135M-Instruct)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="One question (default: the shipped math word problems)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSONL file, one {\"id\", \"prompt\", \"response\"?} per line."),
    response: Optional[str] = typer.Option(None, "--response", help="Response to score (default: greedy generation)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Greedy tokens when no response is given."),
    out: Path = typer.Option(Path("runs/preplan"), "--out", help="Output folder."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layers (default: 5 in [L/3, 2L/3])."),
    local_quantile: float = typer.Option(0.3, "--local-quantile", help="Share of heads with the lowest span = local."),
    global_quantile: float = typer.Option(0.3, "--global-quantile", help="Share of heads with the highest span = global."),
    preplan_quantile: float = typer.Option(0.4, "--preplan-quantile", help="Top share of WAAD jumps = preplan tokens."),
    anchor_quantile: float = typer.Option(0.4, "--anchor-quantile", help="Top share of FAI = anchor tokens."),
    window: int = typer.Option(10, "--window", help="W of WAAD."),
    band_lo: int = typer.Option(10, "--band-lo", help="FAI band start (queries s+lo..s+hi)."),
    band_hi: int = typer.Option(100, "--band-hi", help="FAI band end."),
    tau_waad: Optional[float] = typer.Option(None, "--tau-waad", help="WAAD cut for locally dominated anchors (default: median)."),
    no_chat: bool = typer.Option(False, "--no-chat", help="Do not wrap prompts in the chat template."),
    backend: str = typer.Option("auto", "--backend", help="interp.kernels backend: auto, reference, torch, triton."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore finished prompts in --out and start over."),
) -> None:
    """Find local/global heads, WAAD and FAI per token, preplan and anchor tokens; write OUT."""
    import hashlib
    import json

    import pandas as pd
    from rich.console import Console

    from interp.analyses.preplan import PreplanConfig, PreplanResult, default_prompts, load_prompts, score_preplan
    from interp.distributed import map_units, open_log, rank_model, world
    from interp.errors import InterpError
    from interp.plots.preplan import save_preplan_html
    from interp.runs import atomic_write_csv, atomic_write_json, prepare_out_dir, run_info

    started = time.time()
    config = PreplanConfig(
        layers=_parse_layers(layers),
        window=window,
        band=(band_lo, band_hi),
        local_quantile=local_quantile,
        global_quantile=global_quantile,
        preplan_quantile=preplan_quantile,
        anchor_quantile=anchor_quantile,
        tau_waad=tau_waad,
        max_new_tokens=max_new_tokens,
        chat=not no_chat,
        backend=backend,
    )
    if prompt is not None and prompts is not None:
        raise InterpError("pass either --prompt or --prompts, not both")
    if response is not None and not response.strip():
        raise InterpError("--response is empty: give the response text, or omit it to generate one greedily")
    if prompt is not None:
        samples = [{"id": "prompt", "prompt": prompt, "response": response}]
    else:
        if response is not None:
            raise InterpError("--response needs --prompt (for a prompt file, put a \"response\" field on each line)")
        samples = load_prompts(prompts) if prompts is not None else default_prompts()
    by_id = {s["id"]: s for s in samples}
    if len(by_id) != len(samples):
        raise InterpError(f"{prompts} repeats a prompt \"id\": give every line a distinct id")
    folder = prepare_out_dir(out)
    console = Console(stderr=True)
    lm = rank_model(model)
    digest = hashlib.sha256(json.dumps(samples, sort_keys=True).encode()).hexdigest()[:16]
    log = open_log(folder / "samples.jsonl", {**config.to_dict(), "prompts_sha256": digest, "model": lm.name}, fresh=fresh)

    def one(sample_id: str) -> dict:
        s = by_id[sample_id]
        return score_preplan(lm, config, prompt=s["prompt"], response=s.get("response")).to_record()

    # One unit of work per prompt, resumable; under torchrun/srun each rank scores its share.
    records = map_units(list(by_id), one, log=log, what="prompts", progress=len(samples) > 1)
    if not world().main:
        return  # every rank holds the merged result; rank 0 writes it
    results, token_tables, head_tables = [], [], []
    for s in samples:
        res = PreplanResult.from_record(records[s["id"]], config)
        results.append(res)
        token_tables.append(res.to_dataframe().assign(sample=s["id"]))
        head_tables.append(res.heads_dataframe().assign(sample=s["id"]))
        console.print(
            f"[bold]{s['id']}[/]: {len(res.tokens)} tokens, {res.n_local} local / {res.n_global} global heads, "
            f"{int(res.preplan.sum())} preplan, {int(res.anchor.sum())} anchor, {int(res.dominated.sum())} dominated"
        )
    ids = [s["id"] for s in samples]
    front = lambda df: df[["sample"] + [c for c in df.columns if c != "sample"]]  # noqa: E731
    atomic_write_csv(folder / "tokens.csv", front(pd.concat(token_tables, ignore_index=True)))
    atomic_write_csv(folder / "heads.csv", front(pd.concat(head_tables, ignore_index=True)))
    save_preplan_html(results, folder / "preplan.html", ids)
    info = run_info(lm, settings=config.to_dict(), started=started)
    info["samples"] = [{"id": i, **r.summary()} for i, r in zip(ids, results)]
    atomic_write_json(folder / "run.json", info)
    console.print(f"wrote tokens.csv, heads.csv, run.json, preplan.html to {folder} ({info['wall_seconds']} s)")


def register(groups) -> None:
    groups["score"].command("preplan")(preplan)

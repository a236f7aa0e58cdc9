"""`interp score retrieval`: retrieval heads by needle-in-a-haystack (Wu et al. 2024).

The runner builds the needle grid (`interp.datasets.needles`) with the model's tokenizer and
chat template, traces every sample (the scored rows and their top-1 key positions, from
`interp.experiments._retrieval_traces`, over a shared-prefix walk by default), scores each trace
(`interp.analyses.retrieval_scores`) and combines the grid (`interp.analyses.retrieval`); then
the causal check re-answers every sample with the top-K and with random-K heads made uniform.
Needle samples are the units of work of the scoring, (condition, sample) those of the check:
shared over ranks in contiguous blocks (samples that share a prefix stay on one rank) and
resumed from ``samples.jsonl`` and ``masking-<hash>.jsonl``.

In a notebook::

    from interp.experiments import Store
    from interp.experiments.retrieval import RetrievalConfig, run
    result = run(lm, RetrievalConfig(lengths=(192,), depths=(0.5,), mask=False), Store())
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import typer

from interp.analyses.retrieval import (
    RetrievalConfig,
    RetrievalResult,
    combine,
    masking_conditions,
    masking_result,
    sample_record,
)
from interp.datasets.haystack import Haystack, load_haystack
from interp.datasets.needles import NeedleSample, PromptTemplate, build_samples, load_needles
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, Store, execute, report_sizes
from interp.experiments._retrieval_traces import (
    answer_recall,
    decode_answers,
    decode_trace,
    decode_traces,
    greedy_answer,
    needle_recall,
    teacher_answers,
    teacher_trace,
    teacher_traces,
)
from interp.models import Model

__all__ = [
    "EXPERIMENT",
    "RetrievalConfig",
    "run",
    "prepare_samples",
    "teacher_trace",
    "teacher_traces",
    "teacher_answers",
    "decode_trace",
    "decode_traces",
    "decode_answers",
    "greedy_answer",
    "needle_recall",
]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_samples(lm: Model, config: RetrievalConfig) -> tuple[list[NeedleSample], dict]:
    """Build every sample of the grid with the model's tokenizer (no forward pass yet).

    Returns:
        (samples, provenance): provenance names the needles, haystack and template used and
        hashes them (these decide whether finished samples of an earlier run can be reused).

    Raises:
        InterpError: any bad input (see `interp.datasets.needles.build_sample`), before any
            model work or file write happens.
    """
    if lm.tokenizer is None:
        raise InterpError("the model has no tokenizer: retrieval scoring builds text prompts, so it needs one")
    needles = load_needles(config.needles)
    sentences, hay_name = load_haystack(config.haystack)

    def encode_many(texts: list[str]) -> list[list[int]]:
        return lm.tokenizer(texts, add_special_tokens=False).input_ids

    haystack = Haystack.tokenize(sentences, encode_many, hay_name)
    template = PromptTemplate.from_chat(lm.chat_prompt)  # plain prompt when there is no chat template
    samples = build_samples(
        lambda text: encode_many([text])[0],
        template,
        haystack,
        needles,
        config.lengths,
        config.depths,
        n_ctx=lm.arch.n_ctx,
        response=config.response,
        bos=lm.bos_id,  # BOS once, at position 0 (the haystack and needle pieces carry none)
    )
    provenance = {
        "model": lm.name,
        "mode": config.mode,
        "response": config.response if config.mode == "teacher" else None,
        "max_new_tokens": config.max_new_tokens if config.mode == "decode" else None,
        "needles": config.needles or "interp/data/needles.jsonl",
        "needles_sha256": _digest([asdict(n) for n in needles]),
        "haystack": hay_name,
        "haystack_sha256": haystack.digest(),
        "haystack_tokens": haystack.n_tokens,
        "chat_template": template.chat,
    }
    return samples, provenance


def _shares_prefix(lm: Model, config: RetrievalConfig) -> bool:
    """Whether traces and masked recalls go through the shared-prefix walk."""
    return config.share_prefix and lm.reuses_prefixes


def _trace_all(lm: Model, todo: Sequence[NeedleSample], config: RetrievalConfig, finish: Callable) -> None:
    """Trace every sample of ``todo``; ``finish(sample, trace)`` as each one completes."""
    if _shares_prefix(lm, config) and todo:
        done = lambda i, t: finish(todo[i], t)  # noqa: E731
        if config.mode == "teacher":
            teacher_traces(lm, todo, backend=config.backend, batch_size=config.batch_for(lm.device), on_trace=done)
        else:
            decode_traces(lm, todo, max_new_tokens=config.max_new_tokens, backend=config.backend, on_trace=done)
        return
    for sample in todo:
        if config.mode == "teacher":
            finish(sample, teacher_trace(lm, sample, backend=config.backend))
        else:
            finish(sample, decode_trace(lm, sample, max_new_tokens=config.max_new_tokens, backend=config.backend))


def _recall_all(lm: Model, todo: Sequence[NeedleSample], config: RetrievalConfig, edits: Sequence, finish: Callable) -> None:
    """Needle recall of every sample of ``todo`` under ``edits``; ``finish(sample, recall, text)``."""
    if _shares_prefix(lm, config) and todo:
        done = lambda i, ids: finish(todo[i], *answer_recall(lm, ids, todo[i]))  # noqa: E731
        if config.mode == "teacher":
            teacher_answers(lm, todo, edits=edits, batch_size=config.batch_for(lm.device), on_answer=done)
        else:
            decode_answers(lm, todo, max_new_tokens=config.max_new_tokens, edits=edits, on_answer=done)
        return
    for sample in todo:
        finish(sample, *needle_recall(lm, sample, config, edits))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="sample", leave=False)


def run(lm: Model, config: RetrievalConfig = RetrievalConfig(), store: Optional[Store] = None) -> RetrievalResult:
    """Score every head for retrieval on the needle grid, and run the causal check.

    Args:
        lm: the model (with a tokenizer).
        config: what to run (`RetrievalConfig`).
        store: where finished samples are logged as they complete (``samples.jsonl``; masking
            runs in ``masking-<hash>.jsonl``) and resumed from (`Store`; None keeps nothing).
            Launched on several ranks, each traces its block and every rank returns the whole result.

    Raises:
        InterpError: bad input (checked before any model work or write), or a folder holding a
            run with other settings.
    """
    from interp.distributed import finished, world
    from interp.hooks import uniform_attention

    store = store or Store()
    arch = lm.arch
    if config.mask:
        config.mask_sizes(arch.n_layers * arch.n_heads)  # K must fit the model: fail before any work
    samples, provenance = prepare_samples(lm, config)
    store.note(**provenance)
    progress = store.progress and world().main  # under torchrun/srun: one bar, rank 0's
    by_key = {s.key: s for s in samples}
    n_computed = len(samples) - len(finished(store.log(provenance), list(by_key)))  # by all ranks together

    t0 = time.perf_counter()
    with _progress(len(samples), f"retrieval ({config.mode})", progress) as bar:
        last = [time.perf_counter()]

        def trace_many(keys: list[str], done: Callable) -> None:  # this rank's unfinished samples
            def finish(sample: NeedleSample, trace) -> None:
                now = time.perf_counter()
                done(sample.key, sample_record(sample, trace, answer_recall(lm, trace.answer_ids(), sample)[1], now - last[0]))
                last[0] = now
                bar.update(1)

            _trace_all(lm, [by_key[k] for k in keys], config, finish)

        # contiguous blocks keep samples that share a prefix on one rank
        records = store.map(
            list(by_key), compute_many=trace_many, settings=provenance, what="needle samples", progress=False, contiguous=True
        )
        bar.update(len(samples) - bar.n)
    scoring_seconds = time.perf_counter() - t0
    result = combine(lm.name, config, samples, records, (arch.n_layers, arch.n_heads))

    t1 = time.perf_counter()
    if config.mask and result.n_samples > 0:
        conditions = masking_conditions(result.scores, config)
        mask_settings = {**provenance, "conditions": [[c, s, [list(h) for h in heads]] for c, s, heads in conditions]}
        recalls: dict[tuple[str, Optional[int]], dict[str, float]] = {}
        with _progress(len(conditions) * len(samples), "masking check", progress) as bar:
            for name, seed, heads in conditions:
                edits = [uniform_attention(layer, head) for layer, head in heads]
                prefix = f"{name}{'' if seed is None else seed}|"

                def recall_many(keys: list[str], done: Callable, edits=edits, prefix=prefix) -> None:  # this rank's share
                    def finish(sample: NeedleSample, recall: float, text: str) -> None:
                        done(prefix + sample.key, {"recall": recall, "answer": text})
                        bar.update(1)

                    _recall_all(lm, [by_key[k[len(prefix):]] for k in keys], config, edits, finish)

                recs = store.map(
                    [prefix + s.key for s in samples], compute_many=recall_many, settings=mask_settings,
                    log=f"masking-{_digest(mask_settings)}.jsonl", what="masked samples", progress=False, contiguous=True,
                )  # fmt: skip
                recalls[(name, seed)] = {s.key: float(recs[prefix + s.key]["recall"]) for s in samples}
        result = replace(result, masking=masking_result(result, conditions, recalls))
    timings = {
        "scoring_seconds": round(scoring_seconds, 2),
        "masking_seconds": round(time.perf_counter() - t1, 2),
        "samples_computed": n_computed,
        "samples_resumed": len(samples) - n_computed,
    }
    return replace(result, timings=timings)


# --------------------------------------------------------------------------------------------
# what the CLI and the report show
# --------------------------------------------------------------------------------------------


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
    backend: str = flags.backend_option(),
    share_prefix: bool = typer.Option(True, "--share-prefix/--no-share-prefix", help="Compute each shared token prefix of the grid once and reuse its KV cache (HF backend; same results)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per batch below a shared prefix (default: 1 on CPU, 4 on CUDA)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore finished samples in --out and start over."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every head for retrieval on a needle-in-a-haystack grid, check causally that the top
    heads matter, and write heads.csv, samples.csv, run.json and retrieval_heads.html into OUT."""
    defaults = RetrievalConfig()
    config = RetrievalConfig(
        lengths=_list(lengths, "--lengths", int) or defaults.lengths,
        depths=_list(depths, "--depths", float) or defaults.depths,
        needles=str(needles) if needles is not None else None,
        haystack=tuple(str(p) for p in haystack or ()),
        mode=mode, response=response, max_new_tokens=max_new_tokens, min_recall=min_recall, threshold=threshold,
        mask=mask, mask_top=mask_top, mask_random=mask_random, seeds=tuple(seed) if seed else defaults.seeds,
        backend=flags.check_backend(backend), share_prefix=share_prefix, batch_size=batch_size,
    )  # fmt: skip
    execute(EXPERIMENT, config, model=model, out=out, fresh=fresh, progress=progress)


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
    report=report_sizes(RetrievalConfig, _REPORT_SIZES),
    report_tables=report_tables,
    report_figures=report_figures,
    order=10,
)

"""`interp score heads`: previous-token, duplicate-token and induction heads (TransformerLens's
head detector scores) on repeated random tokens and, optionally, the user's texts.

The runner draws the random sequences (`interp.datasets.random_tokens`) and encodes the texts,
runs one forward pass per unit (the random batch, each text), and reduces each layer's q and k
with the kernel's target-key statistic as the layer runs, stopping after the last analysed
layer; `interp.analyses.heads` turns the per-unit sums into scores. Units are shared over ranks
and resumed from ``samples.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import typer
from jaxtyping import Int
from torch import Tensor

from interp.analyses.heads import (
    HeadConfig,
    HeadResult,
    combine,
    detector_targets,
    kind_sums,
    parse_kinds,
    rows_in_window,
)
from interp.datasets.random_tokens import repeated_random_tokens
from interp.datasets.texts import read_texts, texts_digest
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute, report_sizes
from interp.models import Model

__all__ = ["EXPERIMENT", "random_sequences", "score_unit", "run"]


def random_sequences(lm: Model, config: HeadConfig) -> Int[Tensor, "seq pos"]:
    """The config's repeated random tokens for ``lm``: drawn from its tokenizer's vocabulary
    (the embedding's rows without a tokenizer), special tokens avoided, BOS first where it has one.

    Raises:
        InterpError: a sequence longer than the model's context, or too small a vocabulary.
    """
    tok = lm.tokenizer
    vocab = len(tok) if tok is not None else lm.vocab_size
    # BOS first where the tokenizer has one (a sink to rest on), unless BOS is switched off (--no-prepend-bos)
    first = getattr(tok, "bos_token_id", None) if tok is not None and lm.prepend_bos is not False else None
    avoid = list(getattr(tok, "all_special_ids", []) or []) if tok is not None else []
    ids = repeated_random_tokens(config.n_seqs, config.length, vocab, config.seed, first, avoid)
    lm.check_length(ids.shape[1])
    return ids


def score_unit(lm: Model, ids: Int[Tensor, "batch pos"], config: HeadConfig, layers: Sequence[int]) -> dict:
    """One forward pass over ``ids``: per layer, the summed row scores of every detector and head.

    Returns:
        A JSON-able record: ``sums`` ``[layer index][kind][head]`` (float64 sums over the batch and
        the query rows) and ``rows`` ``[kind]`` (query rows with an expected key).
    """
    from interp.hooks import stream_layers
    from interp.kernels import attention_stats

    bos = getattr(lm.tokenizer, "bos_token_id", None) if lm.tokenizer is not None else None  # BOS: no expected key
    targets, widths, rows = detector_targets(ids, config.kinds, config.max_targets, config.exclude_current, bos)
    targets = targets.to(lm.device)
    index = {layer: i for i, layer in enumerate(layers)}
    sums = np.zeros((len(layers), len(config.kinds), lm.arch.n_heads))

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        st = attention_stats(q, k, **lm.attention_kwargs(layer), columns=False, targets=targets, backend=config.backend)
        sums[index[layer]] = kind_sums(st.target, widths)

    stream_layers(lm, ids.to(lm.device), layers, on_layer)
    windows = {lm.attention_kwargs(layer)["sliding_window"] for layer in layers} - {None}
    in_window = {str(w): list(rows_in_window(targets, widths, w)) for w in sorted(windows)}
    return {"sums": sums.tolist(), "rows": list(rows), "in_window": in_window}


def run(lm: Model, config: HeadConfig = HeadConfig(), store: Optional[Store] = None) -> HeadResult:
    """Previous-token, duplicate-token and induction scores of every head.

    Args:
        lm: the model.
        config: what to measure.
        store: where finished units are logged and resumed from (None keeps nothing).

    Raises:
        InterpError: layers out of range, a sequence or text that does not fit the context.
    """
    from interp.errors import InterpError
    from interp.hooks import check_layers

    store = store or Store()
    layers = check_layers(lm, config.layers)
    if config.texts is not None and lm.tokenizer is None:
        raise InterpError("scoring texts needs the model's tokenizer: load the model with interp.load_model")
    units: dict[str, tuple[str, Tensor]] = {}
    if config.random:
        units["random"] = ("random", random_sequences(lm, config))
    for n, text in enumerate(config.texts or ()):
        units[f"text-{n:05d}"] = ("text", lm.encode(text))
    if config.texts is not None:
        store.note(texts_sha256=texts_digest(config.texts))
    settings = {**config.settings(), **store.notes, "model": lm.name}
    done = store.map(
        list(units), lambda key: score_unit(lm, units[key][1], config, layers), settings=settings, what="head detectors: units",
        idle_ok=True,
    )  # fmt: skip
    records: dict[str, list] = {source: [] for source in config.sources}
    for key, (source, _) in units.items():
        records[source].append(done[key])
    windows = [lm.attention_kwargs(layer)["sliding_window"] for layer in layers]
    return combine(config, lm.name, layers, lm.arch.n_heads, records, windows)


def _top_text(top: Sequence[tuple[int, int, float]]) -> str:
    return ", ".join(f"L{l}H{h} ({v:.2f})" for l, h, v in top)


def describe(result: HeadResult) -> str:
    """The finding in one sentence: the top three heads of each detector."""
    cfg = result.config
    source = result.sources[0]
    parts = [f"{kind}: {_top_text(result.top(kind, 3, source))}" for kind in result.kinds]
    where = (
        f"On {cfg.n_seqs} sequences of {cfg.length} random tokens said twice"
        if source == "random"
        else f"On {len(cfg.texts or ())} texts"
    )
    return (
        f"{where}, the heads with the most attention on the expected key (TransformerLens's head detector scores) are "
        + "; ".join(parts)
        + "."
    )


def tables(result: HeadResult) -> dict[str, Any]:
    return {"heads": result.to_dataframe()}


def figures(result: HeadResult) -> dict[str, Any]:
    from interp.plots.heads import detector_figure

    out = {"heads": detector_figure(result)}
    if "text" in result.sources and "random" in result.sources:
        out["heads_text"] = detector_figure(result, "text")
    return out


def report_figures(result: HeadResult) -> dict[str, Any]:
    from interp.plots.heads import detector_figure

    return {"head_detectors": detector_figure(result)}


def cli(
    kind: str = typer.Option(
        "previous,duplicate,induction", "--kind", help="Detectors, comma-separated: previous, duplicate, induction."
    ),
    model: Optional[str] = flags.model_option(),
    texts: Optional[Path] = typer.Option(
        None, "--texts", help="Also score on your texts: UTF-8 file, texts separated by lines '---'."
    ),
    no_random: bool = typer.Option(False, "--no-random", help="Skip the repeated random tokens (needs --texts)."),
    n_seqs: int = typer.Option(8, "--n-seqs", help="Repeated random sequences."),
    length: int = typer.Option(64, "--length", help="Random tokens per copy (sequences are 1 + 2 x length tokens)."),
    seed: int = typer.Option(0, "--seed"),
    layers: Optional[str] = flags.layers_option(),
    backend: str = flags.backend_option(),
    out: Path = flags.out_option("runs/heads"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Previous-token, duplicate-token and induction heads (TransformerLens's head_detector scores);
    writes heads.csv, run.json and heads.html into OUT."""
    config = HeadConfig(
        kinds=parse_kinds(kind), random=not no_random, n_seqs=n_seqs, length=length, seed=seed,
        texts=read_texts(texts) if texts is not None else None, layers=flags.parse_layers(layers),
        backend=flags.check_backend(backend),
    )  # fmt: skip
    execute(
        EXPERIMENT,
        config,
        launch=flags.launch(),
        model=model,
        out=out,
        fresh=fresh,
        notes={"texts_file": str(texts) if texts else None},
    )


# The head analyses take seconds each at these sizes (one thread of the 2-core machine).
# The report's sizes: 8 sequences of 48 random tokens said twice (quick: 2 of 24).
_REPORT_SIZES = {False: {"n_seqs": 8, "length": 48}, True: {"n_seqs": 2, "length": 24}}


EXPERIMENT = Experiment(
    name="heads",
    title="Previous-token, duplicate-token and induction heads",
    command=("score", "heads"),
    config=HeadConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    report=InReport(report_sizes(HeadConfig, _REPORT_SIZES), order=50, figures=report_figures),
    quick=_REPORT_SIZES[True],
)

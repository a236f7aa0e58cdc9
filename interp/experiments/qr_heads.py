"""`interp score qr-heads`: query-focused retrieval heads (QRHead) on a document-retrieval set.

The runner builds each sample's prompt (`interp.datasets.documents.build_prompt`, spans
labelled), runs it and its null-query twin through the model, and reduces each layer's query
rows to the attention mass on every document with the kernel's segment statistic, stopping
after the last analysed layer; `interp.analyses.qr_heads` calibrates and scores. Samples are
the units of work: shared over ranks, resumed from ``samples.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import typer
from jaxtyping import Float
from torch import Tensor

from interp.analyses.qr_heads import NULL_QUERY, QRConfig, QRResult, combine, qr_scores
from interp.datasets.documents import QRSample, build_prompt, read_samples, samples_digest, shipped_samples
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute, report_sizes
from interp.models import Model

__all__ = ["EXPERIMENT", "document_mass", "score_sample", "run"]


def document_mass(
    lm: Model,
    ids: Sequence[int],
    seg: Sequence[int],
    rows: Sequence[int],
    n_docs: int,
    layers: Sequence[int],
    backend: str = "auto",
) -> Float[Tensor, "layer head doc"]:
    """[layer index, head, n_docs] m_c of one prompt: mean over the query rows of the mass on each document.

    Args:
        ids: the prompt's token ids.
        seg: per token, the document it belongs to (-1: none).
        rows: the query's token indices.

    Raises:
        InterpError: a prompt longer than the model's context.
    """
    from interp.hooks import stream_layers
    from interp.kernels import attention_stats

    index = {layer: i for i, layer in enumerate(layers)}
    out = torch.zeros(len(layers), lm.arch.n_heads, n_docs, dtype=torch.float64)
    segments = torch.tensor([list(seg)], device=lm.device)

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        st = attention_stats(
            q, k, **lm.attention_kwargs(layer), segments=segments, n_segments=n_docs, query_rows=list(rows),
            columns=False, backend=backend,
        )  # fmt: skip
        out[index[layer]] = qr_scores(st.seg[0].double().cpu())

    lm.check_length(len(ids))
    stream_layers(lm, torch.tensor([list(ids)], device=lm.device), layers, on_layer)
    return out


def score_sample(lm: Model, sample: QRSample, config: QRConfig, layers: Sequence[int]) -> dict:
    """One sample's record: ``mass`` (query) and ``null`` (null query; None without calibration),
    each ``[layer index][head][doc]``."""
    n_docs = len(sample.documents)
    ids, seg, rows = build_prompt(lm.tokenizer, sample.documents, sample.query, bos=lm.bos_id)
    mass = document_mass(lm, ids, seg, rows, n_docs, layers, config.backend)
    null = None
    if config.calibrate:
        ids0, seg0, rows0 = build_prompt(lm.tokenizer, sample.documents, NULL_QUERY, bos=lm.bos_id)
        null = document_mass(lm, ids0, seg0, rows0, n_docs, layers, config.backend).tolist()
    return {"mass": mass.tolist(), "null": null}


def run(lm: Model, config: QRConfig = QRConfig(), store: Optional[Store] = None) -> QRResult:
    """QR scores of every head on a detection set (two forward passes per sample: query and null query).

    Raises:
        InterpError: no tokenizer, layers out of range, a prompt that does not fit.
    """
    from interp.hooks import check_layers

    store = store or Store()
    if lm.tokenizer is None:
        raise InterpError("QR head scoring needs the model's tokenizer: load the model with interp.load_model")
    layers = check_layers(lm, config.layers)
    samples = config.samples if config.samples is not None else shipped_samples()
    samples = samples[: config.max_samples] if config.max_samples else samples
    by_key = {f"sample-{n:05d}": s for n, s in enumerate(samples)}
    store.note(samples_sha256=samples_digest(samples))
    settings = {**config.settings(), **store.notes, "model": lm.name}
    done = store.map(
        list(by_key),
        lambda key: score_sample(lm, by_key[key], config, layers),
        settings=settings,
        what="qr-heads: samples",
    )
    return combine(config, lm.name, layers, lm.arch.n_heads, samples, [done[key] for key in by_key])


def describe(result: QRResult) -> str:
    """The finding: the top three QR heads with how often each picks the right document."""
    acc = result.accuracy
    idx = {layer: i for i, layer in enumerate(result.layers)}
    return (
        f"On {result.n_samples} samples of 4 one-sentence documents and a question, the heads whose query tokens put "
        "the most attention on the answering document, minus the same for a null query (QRHead): "
        + ", ".join(f"L{l}H{h} ({v:.2f}, picks the right document {acc[idx[l], h]:.0%})" for l, h, v in result.top(3))
        + "."
    )


def tables(result: QRResult) -> dict[str, Any]:
    return {"heads": result.to_dataframe()}


def figures(result: QRResult) -> dict[str, Any]:
    from interp.plots.heads import qr_heads_figure

    return {"qr_heads": qr_heads_figure(result)}


def cli(
    samples: Optional[Path] = typer.Option(
        None, "--samples", help="JSONL of {query, documents, gold} lines (default: the shipped detection set)."
    ),
    model: Optional[str] = flags.model_option(),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Score only the first N samples."),
    no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Do not subtract the null-query score."),
    layers: Optional[str] = flags.layers_option(),
    backend: str = flags.backend_option(),
    top: int = typer.Option(10, "--top", help="Best heads listed in run.json's summary."),
    out: Path = flags.out_option("runs/qr-heads"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Query-focused retrieval heads (QRHead): attention mass from the query span to the gold document,
    minus the same for a null query; writes heads.csv, run.json and qr_heads.html into OUT."""
    config = QRConfig(
        samples=read_samples(samples) if samples is not None else None, max_samples=max_samples,
        calibrate=not no_calibrate, top=top, layers=flags.parse_layers(layers), backend=flags.check_backend(backend),
    )  # fmt: skip
    execute(
        EXPERIMENT,
        config,
        launch=flags.launch(),
        model=model,
        out=out,
        fresh=fresh,
        notes={"samples_file": str(samples) if samples else None},
    )


# The report's sizes: the first 8 shipped samples (quick: 2).
_REPORT_SIZES = {False: {"max_samples": 8}, True: {"max_samples": 2}}


EXPERIMENT = Experiment(
    name="qr_heads",
    title="Query-focused retrieval heads",
    command=("score", "qr-heads"),
    config=QRConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    report=InReport(report_sizes(QRConfig, _REPORT_SIZES), order=70),
    quick=_REPORT_SIZES[True],
)

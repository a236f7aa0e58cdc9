"""`interp score heads`, `score select-copy`, `score qr-heads` and `score influence`.

Thin typer layer: flags map onto the configs of `interp.analyses.heads`, `select_copy`,
`qr_heads` and `influence`; each command calls one library function and writes its tables,
run.json and a figure into --out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "score_heads_cmd"]

_MODEL_HELP = "HF hub id or local folder (default: embedded SmolLM2-135M-Instruct)."


def _layers(text: Optional[str]):
    from interp.commands.sinks import _parse_ints

    return _parse_ints(text, "--layers")


def _write(folder: Path, lm, settings: dict, started: float, tables: dict, figures: dict, summary: dict) -> dict:
    from interp.plots.export import save_figure
    from interp.runs import atomic_write_csv, atomic_write_json, run_info

    for name, df in tables.items():
        atomic_write_csv(folder / f"{name}.csv", df)
    for name, fig in figures.items():
        save_figure(fig, folder / f"{name}.html")
    info = run_info(lm, settings=settings, started=started)
    info["summary"] = summary
    atomic_write_json(folder / "run.json", info)
    return info


def score_heads_cmd(
    kind: str = typer.Option("previous,duplicate,induction", "--kind", help="Detectors, comma-separated: previous, duplicate, induction."),
    model: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    texts: Optional[Path] = typer.Option(None, "--texts", help="Also score on your texts: UTF-8 file, texts separated by lines '---'."),
    no_random: bool = typer.Option(False, "--no-random", help="Skip the repeated random tokens (needs --texts)."),
    n_seqs: int = typer.Option(8, "--n-seqs", help="Repeated random sequences."),
    length: int = typer.Option(64, "--length", help="Random tokens per copy (sequences are 1 + 2 x length tokens)."),
    seed: int = typer.Option(0, "--seed"),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layers (default: all)."),
    backend: str = typer.Option("auto", "--backend", help="interp.kernels backend: auto, reference, torch, triton."),
    out: Path = typer.Option(Path("runs/heads"), "--out", help="Output folder."),
) -> None:
    """Previous-token, duplicate-token and induction heads (TransformerLens's head_detector scores);
    writes heads.csv, run.json and heads.html into OUT."""
    from rich.console import Console

    from interp.analyses.heads import HeadConfig, parse_kinds, score_heads
    from interp.datasets.texts import read_texts
    from interp.models import load_model
    from interp.plots.heads import detector_figure
    from interp.runs import prepare_out_dir

    started = time.time()
    config = HeadConfig(
        kinds=parse_kinds(kind), random=not no_random, n_seqs=n_seqs, length=length, seed=seed,
        texts=read_texts(texts) if texts is not None else None, layers=_layers(layers), backend=backend,
    )  # fmt: skip
    config.validate()
    folder = prepare_out_dir(out)
    lm = load_model(model)
    result = score_heads(lm, config)
    figures = {"heads": detector_figure(result)}
    if "text" in result.sources and "random" in result.sources:
        figures["heads_text"] = detector_figure(result, "text")
    settings = {**config.settings(), "texts_file": str(texts) if texts else None, "model": lm.name}
    info = _write(folder, lm, settings, started, {"heads": result.to_dataframe()}, figures, result.summary())
    console = Console(stderr=True)
    for source in result.sources:
        for k in result.kinds:
            tops = ", ".join(f"L{l}H{h} ({v:.2f})" for l, h, v in result.top(k, 5, source))
            console.print(f"[bold]{k}[/] ({source}): {tops}")
    console.print(f"wrote heads.csv, run.json, {', '.join(f + '.html' for f in figures)} to {folder} ({info['wall_seconds']} s)")


def score_select_copy_cmd(
    questions: str = typer.Option("mcq", "--questions", help="Shipped task 'mcq', or a JSONL file of {question, options, answer} lines."),
    model: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    max_questions: Optional[int] = typer.Option(None, "--max-questions", help="Score only the first N questions."),
    anchor: str = typer.Option("newline", "--anchor", help="Option token: 'newline' (end of the option's line, the paper) or 'label' (its letter)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layers (default: all)."),
    backend: str = typer.Option("auto", "--backend", help="interp.kernels backend."),
    top: int = typer.Option(10, "--top", help="Best heads printed."),
    out: Path = typer.Option(Path("runs/select-copy"), "--out", help="Output folder."),
) -> None:
    """Select-and-copy heads (Tulchinskii et al. 2024): per head, the accuracy of the argmax over options
    of the final query's QK-score and attention score; writes heads.csv, questions.csv, run.json and
    select_copy.html into OUT."""
    import pandas as pd
    from rich.console import Console

    from interp.analyses.select_copy import SelectCopyConfig, read_questions, score_select_copy, shipped_questions
    from interp.models import load_model
    from interp.plots.heads import select_copy_figure
    from interp.runs import prepare_out_dir

    started = time.time()
    qs = shipped_questions(questions) if questions == "mcq" else read_questions(questions)
    config = SelectCopyConfig(questions=qs, max_questions=max_questions, anchor=anchor, layers=_layers(layers), backend=backend)
    config.validate()
    folder = prepare_out_dir(out)
    lm = load_model(model)
    result = score_select_copy(lm, config)
    per_q = pd.DataFrame({"question": result.question_ids, "model_correct": result.model_correct})
    settings = {**config.settings(), "questions_source": questions, "model": lm.name}
    info = _write(
        folder, lm, settings, started, {"heads": result.to_dataframe(), "questions": per_q},
        {"select_copy": select_copy_figure(result)}, result.summary(top),
    )  # fmt: skip
    console = Console(stderr=True)
    console.print(
        f"[bold]{result.n_questions} questions[/], chance {1 / result.n_options:.2f}, model accuracy {result.model_accuracy:.2f}; "
        "best QK heads: " + ", ".join(f"L{l}H{h} ({a:.2f})" for l, h, a in result.top(top, "qk"))
    )
    console.print("best attention heads: " + ", ".join(f"L{l}H{h} ({a:.2f})" for l, h, a in result.top(top, "attn")))
    console.print(f"wrote heads.csv, questions.csv, run.json, select_copy.html to {folder} ({info['wall_seconds']} s)")


def score_qr_heads_cmd(
    samples: Optional[Path] = typer.Option(None, "--samples", help="JSONL of {query, documents, gold} lines (default: the shipped detection set)."),
    model: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Score only the first N samples."),
    no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Do not subtract the null-query score."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layers (default: all)."),
    backend: str = typer.Option("auto", "--backend", help="interp.kernels backend."),
    top: int = typer.Option(10, "--top", help="Best heads printed."),
    out: Path = typer.Option(Path("runs/qr-heads"), "--out", help="Output folder."),
) -> None:
    """Query-focused retrieval heads (QRHead): attention mass from the query span to the gold document,
    minus the same for a null query; writes heads.csv, run.json and qr_heads.html into OUT."""
    from rich.console import Console

    from interp.analyses.qr_heads import QRConfig, read_samples, score_qr_heads
    from interp.models import load_model
    from interp.plots.heads import qr_heads_figure
    from interp.runs import prepare_out_dir

    started = time.time()
    config = QRConfig(
        samples=read_samples(samples) if samples is not None else None, max_samples=max_samples,
        calibrate=not no_calibrate, layers=_layers(layers), backend=backend,
    )  # fmt: skip
    config.validate()
    folder = prepare_out_dir(out)
    lm = load_model(model)
    result = score_qr_heads(lm, config)
    settings = {**config.settings(), "samples_file": str(samples) if samples else None, "model": lm.name}
    info = _write(folder, lm, settings, started, {"heads": result.to_dataframe()}, {"qr_heads": qr_heads_figure(result)}, result.summary(top))
    console = Console(stderr=True)
    acc = result.accuracy
    idx = {layer: i for i, layer in enumerate(result.layers)}
    console.print(
        f"[bold]{result.n_samples} samples[/]; top QR heads (score, accuracy): "
        + ", ".join(f"L{l}H{h} ({v:.3f}, {acc[idx[l], h]:.2f})" for l, h, v in result.top(top))
    )
    console.print(f"wrote heads.csv, run.json, qr_heads.html to {folder} ({info['wall_seconds']} s)")


def score_influence_cmd(
    heads: str = typer.Option(..., "--heads", help="A retrieval run's heads.csv (top --k by score), or LAYER.HEAD pairs like 18.6,23.2."),
    texts: Path = typer.Option(..., "--texts", help="UTF-8 file of the texts to rank, separated by lines '---'."),
    model: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    k: Optional[int] = typer.Option(None, "--k", help="Heads taken from heads.csv (default: 5% of the model's heads)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Tokens of each text scored."),
    out: Path = typer.Option(Path("runs/influence"), "--out", help="Output folder."),
) -> None:
    """AttentionInfluence (arXiv 2505.07293): AI = (L_masked - L_base) / L_base per text with the top
    retrieval heads made uniform; ranks your texts. Writes texts.csv, run.json and influence.html into OUT."""
    from rich.console import Console

    from interp.analyses.influence import attention_influence, read_heads
    from interp.datasets.texts import read_texts
    from interp.commands.sinks import _parse_heads
    from interp.models import load_model
    from interp.plots.heads import influence_figure
    from interp.runs import prepare_out_dir

    started = time.time()
    text_set = read_texts(texts)
    as_file = heads.endswith(".csv") or Path(heads).is_file()
    explicit = None if as_file else _parse_heads(heads)
    if as_file and not Path(heads).is_file():
        read_heads(heads, 1)  # raises the not-found message before the model loads
    folder = prepare_out_dir(out)
    lm = load_model(model)
    n_total = lm.arch.n_layers * lm.arch.n_heads
    chosen = explicit or read_heads(heads, k or max(1, round(0.05 * n_total)))
    result = attention_influence(lm, text_set, chosen, max_tokens=max_tokens)
    settings = {"heads": heads, "k": len(chosen), "texts_file": str(texts), "max_tokens": max_tokens, "model": lm.name}
    info = _write(folder, lm, settings, started, {"texts": result.to_dataframe()}, {"influence": influence_figure(result)}, result.summary())
    s = info["summary"]
    Console(stderr=True).print(
        f"[bold]{s['n_texts']} texts[/], {len(chosen)} heads made uniform: AI mean {s['mean_influence']:.3f}, "
        f"max {s['max_influence']:.3f} ({s['top_text']!r}), min {s['min_influence']:.3f}; wrote texts.csv, run.json, "
        f"influence.html to {folder} ({info['wall_seconds']} s)"
    )


def register(groups) -> None:
    groups["score"].command("heads")(score_heads_cmd)
    groups["score"].command("select-copy")(score_select_copy_cmd)
    groups["score"].command("qr-heads")(score_qr_heads_cmd)
    groups["score"].command("influence")(score_influence_cmd)

"""`interp score select-copy`: select-and-copy heads (Tulchinskii et al. 2024) on multiple-choice questions.

The runner tokenises each question, finds the tokens of its option anchors through the
tokenizer's character offsets (`interp.datasets.questions`), runs one full forward pass (its
last logits give the model's own answer) and reduces each layer's final query to the QK-scores
and attention scores on the anchors; `interp.analyses.select_copy` turns those into per-head
accuracies. Questions are the units of work: shared over ranks, resumed from ``samples.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import typer
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.select_copy import SelectCopyConfig, SelectCopyResult, combine
from interp.datasets.questions import (
    LETTERS,
    Question,
    anchor_tokens,
    option_anchors,
    option_count,
    questions_digest,
    read_questions,
    shipped_questions,
)  # fmt: skip
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute, report_sizes
from interp.models import Model

__all__ = ["EXPERIMENT", "option_scores", "prompt_tokens", "run"]


def option_scores(
    lm: Model, input_ids: Int[Tensor, "1 pos"], positions: Sequence[int], layers: Sequence[int], backend: str = "auto"
) -> tuple[Float[Tensor, "layer head option"], Float[Tensor, "layer head option"], Float[Tensor, " vocab"]]:
    """QK-scores and attention scores of the final query on the option anchors, every head.

    Args:
        input_ids: [1, pos] one prompt.
        positions: token index of each option's anchor.

    Returns:
        (qk [layer index, head, option] q_N . k_t (float64), attn [layer index, head, option]
        A_{N, t}, logits [vocab] at the final position).
    """
    from interp.hooks import stream_layers
    from interp.kernels import attention_stats

    index = {layer: i for i, layer in enumerate(layers)}
    qk = torch.zeros(len(layers), lm.arch.n_heads, len(positions), dtype=torch.float64)
    at = torch.zeros_like(qk)
    targets = torch.tensor([[list(positions)]], device=lm.device)  # [batch 1, row 1, n_options]

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        kw = lm.attention_kwargs(layer)
        st = attention_stats(q, k, **kw, query_rows=[q.shape[2] - 1], columns=False, targets=targets, backend=backend)
        qk[index[layer]] = st.target_score[0, :, 0].double().cpu() / kw["scale"]
        at[index[layer]] = st.target[0, :, 0].double().cpu()

    logits = stream_layers(lm, input_ids.to(lm.device), layers, on_layer, full=True)
    return qk, at, logits[0, -1].float().cpu()


def prompt_tokens(lm: Model, question: Question, anchor: str = "newline") -> tuple[list[int], list[int]]:
    """(token ids of the question's prompt, token index of each option's anchor).

    Raises:
        InterpError: a prompt without option lines, or one longer than the model's context.
    """
    chars = option_anchors(question.prompt, question.n_options, anchor)
    enc = lm.tokenizer(question.prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids = lm.with_bos(enc["input_ids"])  # the offsets index the text's tokens: a BOS shifts them by one
    shift = len(ids) - len(enc["input_ids"])
    lm.check_length(len(ids))
    return ids, [shift + t for t in anchor_tokens(enc["offset_mapping"], chars)]


def _letter_ids(lm: Model, n_options: int) -> list[int]:
    """The token id of " A", " B", ... (its last token): the model's answer is the likeliest."""
    return [lm.tokens(f" {LETTERS[i]}")[-1] for i in range(n_options)]


def run(lm: Model, config: SelectCopyConfig = SelectCopyConfig(), store: Optional[Store] = None) -> SelectCopyResult:
    """QK-score and attention-score accuracy of every head on multiple-choice questions.

    One full forward pass per question (the logits give the model's own answer); each layer's
    statistics are the target-key statistic of the final row on the option anchors.

    Raises:
        InterpError: no tokenizer, layers out of range, questions with differing option counts,
            prompts without option lines or longer than the context.
    """
    from interp.hooks import check_layers

    store = store or Store()
    if lm.tokenizer is None:
        raise InterpError("select-and-copy scoring needs the model's tokenizer: load the model with interp.load_model")
    layers = check_layers(lm, config.layers)
    questions = config.questions if config.questions is not None else shipped_questions()
    questions = questions[: config.max_questions] if config.max_questions else questions
    n_options = option_count(questions)
    letters = _letter_ids(lm, n_options)
    by_key = {f"question-{n:05d}": q for n, q in enumerate(questions)}
    store.note(questions_sha256=questions_digest(questions))
    settings = {**config.settings(), **store.notes, "model": lm.name}

    def score(key: str) -> dict:
        ids, pos = prompt_tokens(lm, by_key[key], config.anchor)
        qk, at, last = option_scores(lm, torch.tensor([ids]), pos, layers, config.backend)
        return {"qk": qk.tolist(), "attn": at.tolist(), "choice": int(last[letters].argmax())}

    done = store.map(list(by_key), score, settings=settings, what="select-copy: questions")
    return combine(config, lm.name, layers, lm.arch.n_heads, questions, [done[key] for key in by_key])


def _top_text(top: Sequence[tuple[int, int, float]]) -> str:
    return ", ".join(f"L{l}H{h} ({v:.2f})" for l, h, v in top)


def describe(result: SelectCopyResult) -> str:
    """The finding: the model's accuracy, the best heads by each score, and the best of chance."""
    return (
        f"On {result.n_questions} multiple-choice questions ({result.n_options} options, chance "
        f"{1 / result.n_options:.2f}) the model's own answer is right {result.model_accuracy:.0%} of the time; the best "
        f"heads by QK-score of the final query on each option's end-of-line token (Tulchinskii et al. 2024): "
        f"{_top_text(result.top(3, 'qk'))}; by attention score: {_top_text(result.top(3, 'attn'))}. With "
        f"{result.n_questions} questions the best of {result.qk_correct[0].size} heads guessing at random would reach "
        f"about {result.chance_best():.2f}."
    )


def tables(result: SelectCopyResult) -> dict[str, Any]:
    return {"heads": result.to_dataframe(), "questions": result.questions_dataframe()}


def figures(result: SelectCopyResult) -> dict[str, Any]:
    from interp.plots.heads import select_copy_figure

    return {"select_copy": select_copy_figure(result)}


def cli(
    questions: str = typer.Option(
        "mcq", "--questions", help="Shipped task 'mcq', or a JSONL file of {question, options, answer} lines."
    ),
    model: Optional[str] = flags.model_option(),
    max_questions: Optional[int] = typer.Option(None, "--max-questions", help="Score only the first N questions."),
    anchor: str = typer.Option(
        "newline",
        "--anchor",
        help="Option token: 'newline' (end of the option's line, the paper) or 'label' (its letter).",
    ),
    layers: Optional[str] = flags.layers_option(),
    backend: str = flags.backend_option(),
    top: int = typer.Option(10, "--top", help="Best heads listed in run.json's summary."),
    out: Path = flags.out_option("runs/select-copy"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Select-and-copy heads (Tulchinskii et al. 2024): per head, the accuracy of the argmax over options
    of the final query's QK-score and attention score; writes heads.csv, questions.csv, run.json and
    select_copy.html into OUT."""
    qs = shipped_questions(questions) if questions == "mcq" else read_questions(questions)
    config = SelectCopyConfig(
        questions=qs, max_questions=max_questions, anchor=anchor, top=top, layers=flags.parse_layers(layers),
        backend=flags.check_backend(backend),
    )  # fmt: skip
    execute(
        EXPERIMENT,
        config,
        launch=flags.launch(),
        model=model,
        out=out,
        fresh=fresh,
        notes={"questions_source": questions},
    )


# The report's sizes: the first 20 shipped questions (quick: 4).
_REPORT_SIZES = {False: {"max_questions": 20}, True: {"max_questions": 4}}


EXPERIMENT = Experiment(
    name="select_copy",
    title="Select-and-copy heads",
    command=("score", "select-copy"),
    config=SelectCopyConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    report=InReport(report_sizes(SelectCopyConfig, _REPORT_SIZES), order=60),
    quick=_REPORT_SIZES[True],
)

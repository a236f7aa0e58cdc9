"""Select-and-copy heads (Tulchinskii et al. 2024, "Listening to the Wise Few", arXiv 2410.02343).

On a multiple-choice prompt whose options sit on their own lines ("A. ...\\nB. ...\\n"), some
heads of the final query N (the position that predicts the answer letter) single out the right
option: the QK-score q_N . k_{t_i} of option i's anchor token t_i, or the attention score
A_{N, t_i}, is largest for the correct option. A head's prediction is the argmax over options;
its accuracy over a question set ranks select-and-copy heads (the paper finds heads that beat
the model's own answer).

Anchor token t_i: by default the end-of-line token of option i's line (the paper's choice); with
``anchor="label"`` the token holding option i's letter (METRICS.md's wording). Both come from
the kernel's target-key statistic (`attention_stats(..., targets=...)` on the final row only;
QK-score = target_score / scale, which has the same argmax), so no [T, T] matrix is built.

Questions: the shipped ``mcq`` task (`interp.analyses.calibration.load_task`, every split) or
a JSONL file of ``{"question": str, "options": [str, ...], "answer": "B" | 1}`` lines, formatted
with the shipped template. `score_select_copy` is the driver; `option_anchors`,
`head_predictions` and `read_questions` are pure and unit-tested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.errors import InterpError

__all__ = [
    "Question",
    "SelectCopyConfig",
    "SelectCopyResult",
    "TEMPLATE",
    "read_questions",
    "shipped_questions",
    "option_anchors",
    "head_predictions",
    "option_scores",
    "score_select_copy",
]

LETTERS = "ABCDEFGHIJ"
TEMPLATE = "Answer the question with the letter of the correct option.\n\nQuestion: {question}\n{options}Answer:"


@dataclass(frozen=True)
class Question:
    """One multiple-choice prompt: ``answer`` indexes the options (0 = A)."""

    id: str
    prompt: str
    n_options: int
    answer: int


def format_prompt(question: str, options: Sequence[str]) -> str:
    """The shipped mcq layout: one "L. option" line per option, then "Answer:"."""
    lines = "".join(f"{LETTERS[i]}. {opt}\n" for i, opt in enumerate(options))
    return TEMPLATE.format(question=question, options=lines)


def read_questions(path: str | Path) -> tuple[Question, ...]:
    """Questions from a JSONL file, one ``{"question", "options", "answer"}`` object per line.

    ``answer`` is a letter ("B") or a 0-based index. Blank lines are skipped.

    Raises:
        InterpError: a missing or empty file, or a bad line (named by its line number).
    """
    p = Path(path)
    if not p.is_file():
        raise InterpError(f"questions file {p} not found: pass a JSONL file of {{\"question\", \"options\", \"answer\"}} lines")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(f"{where} is not JSON ({err.msg}): write one object per line") from err
        if not isinstance(row, dict) or not {"question", "options", "answer"} <= set(row):
            raise InterpError(f'{where}: need an object with "question", "options" and "answer"')
        opts = row["options"]
        if not (isinstance(opts, list) and 2 <= len(opts) <= len(LETTERS) and all(isinstance(o, str) and o.strip() and "\n" not in o for o in opts)):
            raise InterpError(f"{where}: options must be a list of 2-{len(LETTERS)} non-empty one-line strings")
        ans = row["answer"]
        if isinstance(ans, str) and len(ans.strip()) == 1 and ans.strip().upper() in LETTERS[: len(opts)]:
            ans = LETTERS.index(ans.strip().upper())
        if not (isinstance(ans, int) and not isinstance(ans, bool) and 0 <= ans < len(opts)):
            raise InterpError(f"{where}: answer {row['answer']!r} must be a letter A-{LETTERS[len(opts) - 1]} or an index 0-{len(opts) - 1}")
        out.append(Question(str(row.get("id", f"line-{n}")), format_prompt(str(row["question"]), opts), len(opts), ans))
    if not out:
        raise InterpError(f"questions file {p} is empty: put one JSON object per line")
    return tuple(out)


def shipped_questions(task: str = "mcq") -> tuple[Question, ...]:
    """Every item (all splits) of a shipped multiple-choice task."""
    from interp.analyses.calibration import load_task

    t = load_task(task)
    if t.kind != "multiple_choice":
        raise InterpError(f"task '{task}' is not multiple choice (kind {t.kind!r}): use mcq or a questions JSONL file")
    return tuple(Question(i.id, i.prompt, len(t.choices), i.answer) for i in t.items)


def option_anchors(prompt: str, n_options: int, anchor: str = "newline") -> list[int]:
    """Character offsets of each option's anchor in ``prompt``.

    Args:
        anchor: "newline" (the line break ending option i's line) or "label" (its letter).

    Raises:
        InterpError: when the prompt lacks the "L. option" lines.
    """
    out = []
    start = 0
    for i in range(n_options):
        m = re.compile(rf"(?m)^{LETTERS[i]}\. [^\n]*\n").search(prompt, start)
        if m is None:
            raise InterpError(
                f"prompt has no line starting with '{LETTERS[i]}. ' ending in a newline: options must be on their "
                "own lines (A. ...\\nB. ...\\n)"
            )
        out.append(m.end() - 1 if anchor == "newline" else m.start())
        start = m.end()
    return out


def _token_positions(tokenizer, prompt: str, chars: Sequence[int]) -> tuple[list[int], list[int]]:
    """(token ids, index of the token covering each character offset)."""
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    spans = enc["offset_mapping"]
    pos = []
    for c in chars:
        hit = [t for t, (a, b) in enumerate(spans) if a <= c < b]
        if not hit:
            raise InterpError(f"no token covers character {c} of the prompt: the tokenizer's offsets do not match")
        pos.append(hit[0])
    return list(enc["input_ids"]), pos


def head_predictions(scores: Tensor) -> Tensor:
    """Argmax over options (ties: the first option).

    Args:
        scores: [..., n_options] QK- or attention scores.
    """
    return scores.argmax(-1)


def option_scores(lm, input_ids: Tensor, positions: Sequence[int], layers: Sequence[int], backend: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """QK-scores and attention scores of the final query on the option anchors, every head.

    Args:
        input_ids: [1, pos] one prompt.
        positions: token index of each option's anchor.

    Returns:
        (qk [layer index, head, option] q_N . k_t (float64), attn [layer index, head, option]
        A_{N, t}, logits [vocab] at the final position).
    """
    from interp.analyses._streaming import stream_layers
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


@dataclass(frozen=True)
class SelectCopyConfig:
    """Settings of `score_select_copy`.

    Attributes:
        questions: the questions; None = the shipped mcq task (all 60 items).
        max_questions: score only the first this many; None = all.
        anchor: "newline" (paper) or "label".
        layers: layers to score; None = all.
        backend: `interp.kernels.attention_stats` backend.
    """

    questions: Optional[tuple[Question, ...]] = None  # None: shipped mcq
    max_questions: Optional[int] = None
    anchor: str = "newline"  # Tulchinskii et al. 2024
    layers: Optional[tuple[int, ...]] = None
    backend: str = "auto"

    def validate(self) -> None:
        if self.anchor not in ("newline", "label"):
            raise InterpError(f"anchor must be 'newline' or 'label', got {self.anchor!r}")
        if self.questions is not None and not self.questions:
            raise InterpError("no questions given: pass at least one, or questions=None for the shipped mcq task")
        if self.max_questions is not None and not (isinstance(self.max_questions, int) and self.max_questions >= 1):
            raise InterpError(f"max_questions must be None or an int >= 1, got {self.max_questions!r}")

    def settings(self) -> dict:
        out = asdict(self)
        qs = out.pop("questions")
        out["questions"] = "shipped mcq" if qs is None else f"{len(qs)} questions"
        return out


@dataclass(frozen=True)
class SelectCopyResult:
    """Per question and head: whether the head's argmax over options is the answer.

    Attributes:
        qk_correct: [question, layer index, head] bool, by QK-score.
        attn_correct: [question, layer index, head] bool, by attention score.
        model_correct: [question] bool, the model's own next-token choice among the letters.
        qk_margin: [question, layer index, head] QK-score of the answer minus the best other.
    """

    config: SelectCopyConfig
    model: str
    layers: tuple[int, ...]
    n_heads: int
    question_ids: tuple[str, ...]
    n_options: int
    qk_correct: np.ndarray
    attn_correct: np.ndarray
    model_correct: np.ndarray
    qk_margin: np.ndarray

    @property
    def n_questions(self) -> int:
        return len(self.question_ids)

    @property
    def qk_accuracy(self) -> np.ndarray:
        return self.qk_correct.mean(0)

    @property
    def attn_accuracy(self) -> np.ndarray:
        return self.attn_correct.mean(0)

    @property
    def model_accuracy(self) -> float:
        return float(self.model_correct.mean())

    def chance_best(self, n_sim: int = 2000, seed: int = 0) -> float:
        """Expected best accuracy over all heads if every head guessed uniformly (Monte Carlo).

        A head beating this is evidence of a select-and-copy head; the best head of many can
        beat chance (1 / n_options) by luck alone when questions are few.
        """
        rng = np.random.default_rng(seed)
        n_heads = self.qk_correct[0].size
        hits = rng.binomial(self.n_questions, 1 / self.n_options, size=(n_sim, n_heads))
        return float(hits.max(1).mean() / self.n_questions)

    def top(self, n: int = 5, by: str = "qk") -> list[tuple[int, int, float]]:
        """Best heads [(layer, head, accuracy)] by QK-score ("qk") or attention ("attn") accuracy."""
        g = self.qk_accuracy if by == "qk" else self.attn_accuracy
        order = np.argsort(-g, axis=None, kind="stable")[:n]
        return [(self.layers[i // self.n_heads], int(i % self.n_heads), float(g.flat[i])) for i in order]

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: layer, head, qk_accuracy, attn_accuracy, mean_qk_margin."""
        li, hi = np.meshgrid(np.arange(len(self.layers)), np.arange(self.n_heads), indexing="ij")
        li, hi = li.ravel(), hi.ravel()
        return pd.DataFrame(
            {
                "layer": np.asarray(self.layers)[li],
                "head": hi,
                "qk_accuracy": self.qk_accuracy[li, hi],
                "attn_accuracy": self.attn_accuracy[li, hi],
                "mean_qk_margin": self.qk_margin.mean(0)[li, hi],
            }
        )

    def summary(self, n: int = 5) -> dict:
        return {
            "n_questions": self.n_questions,
            "chance": 1 / self.n_options,
            "chance_best_head": self.chance_best(),
            "model_accuracy": self.model_accuracy,
            "top_qk": [[l, h, round(a, 4)] for l, h, a in self.top(n, "qk")],
            "top_attn": [[l, h, round(a, 4)] for l, h, a in self.top(n, "attn")],
        }


def score_select_copy(lm, config: SelectCopyConfig = SelectCopyConfig(), *, progress: bool = False) -> SelectCopyResult:
    """QK-score and attention-score accuracy of every head on multiple-choice questions.

    One full forward pass per question (the logits give the model's own answer); each layer's
    statistics are the target-key statistic of the final row on the option anchors.

    Raises:
        InterpError: bad settings, questions with differing option counts, prompts without option lines.
    """
    from interp.hooks import check_layers

    config.validate()
    if getattr(lm, "tokenizer", None) is None:
        raise InterpError("select-and-copy scoring needs the model's tokenizer: load the model with interp.load_model")
    layers = check_layers(lm, config.layers)
    questions = config.questions if config.questions is not None else shipped_questions()
    questions = questions[: config.max_questions] if config.max_questions else questions
    n_opt = {q.n_options for q in questions}
    if len(n_opt) != 1:
        raise InterpError(f"questions have different numbers of options {sorted(n_opt)}: give every question the same number")
    n_options = n_opt.pop()
    letters = []
    for i in range(n_options):
        ids = lm.tokenizer(f" {LETTERS[i]}", add_special_tokens=False).input_ids
        letters.append(ids[-1])
    shape = (len(questions), len(layers), lm.arch.n_heads)
    qk_ok, at_ok, margin = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape)
    model_ok = np.zeros(len(questions), bool)
    for qi, q in enumerate(questions):
        ids, pos = _token_positions(lm.tokenizer, q.prompt, option_anchors(q.prompt, n_options, config.anchor))
        lm.check_length(len(ids))
        qk, at, last = option_scores(lm, torch.tensor([ids]), pos, layers, config.backend)
        qk_ok[qi] = head_predictions(qk).numpy() == q.answer
        at_ok[qi] = head_predictions(at).numpy() == q.answer
        others = torch.cat([qk[..., : q.answer], qk[..., q.answer + 1 :]], -1)
        margin[qi] = (qk[..., q.answer] - others.max(-1).values).numpy()
        model_ok[qi] = int(last[letters].argmax()) == q.answer
    return SelectCopyResult(
        config, lm.name, tuple(layers), lm.arch.n_heads, tuple(q.id for q in questions), n_options,
        qk_ok, at_ok, model_ok, margin,
    )  # fmt: skip

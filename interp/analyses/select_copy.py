"""Select-and-copy heads (Tulchinskii et al. 2024, "Listening to the Wise Few", arXiv 2410.02343).

On a multiple-choice prompt whose options sit on their own lines ("A. ...\\nB. ...\\n"), some
heads of the final query N (the position that predicts the answer letter) single out the right
option: the QK-score q_N . k_{t_i} of option i's anchor token t_i, or the attention score
A_{N, t_i}, is largest for the correct option. A head's prediction is the argmax over options;
its accuracy over a question set ranks select-and-copy heads (the paper finds heads that beat
the model's own answer).

Anchor token t_i: by default the end-of-line token of option i's line (the paper's choice); with
``anchor="label"`` the token holding option i's letter (docs/METRICS.md's wording). Both come from
the kernel's target-key statistic (`attention_stats(..., targets=...)` on the final row only;
QK-score = target_score / scale, which has the same argmax), so no [T, T] matrix is built.

The questions (`interp.datasets.questions`: the shipped ``mcq`` task or a JSONL file) and the
runner that scores them (`interp.experiments.select_copy`) live apart; this module is pure:
`head_predictions`, `answer_margin`, `combine` over the per-question option scores, the frozen
`SelectCopyConfig` and `SelectCopyResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.checks import Check, above, as_records, chance_level, not_tested
from interp.analyses.ranking import grid_cells, rank_heads
from interp.analyses.stats import mean_spread, proportion_spread, spread_columns
from interp.config import Config
from interp.datasets.questions import Question
from interp.errors import InterpError

__all__ = ["SelectCopyConfig", "SelectCopyResult", "head_predictions", "answer_margin", "combine"]


@dataclass(frozen=True)
class SelectCopyConfig(Config):
    """What the select-and-copy experiment scores.

    Attributes:
        questions: the questions; None = the shipped mcq task (all 60 items).
        max_questions: score only the first this many; None = all.
        anchor: "newline" (paper) or "label".
        top: best heads listed in the summary (run.json).
        layers: layers to score; None = all.
        backend: `interp.kernels.attention_stats` backend.
        chance_quantile: check: the best head's QK accuracy must exceed this quantile of the best
            accuracy that as many heads guessing at random reach.
    """

    questions: Optional[tuple[Question, ...]] = None  # None: shipped mcq
    max_questions: Optional[int] = None  # None: every question
    anchor: str = "newline"  # Tulchinskii et al. 2024
    top: int = 5  # heads in the summary
    layers: Optional[tuple[int, ...]] = None  # None: all layers
    backend: str = "auto"  # kernel backend
    chance_quantile: float = (
        0.95  # check: best head above the 95th percentile of the best guessing head (no paper value)
    )

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        if self.layers is not None:
            self.normalise(layers=tuple(self.layers))
        if not 0.0 < self.chance_quantile < 1.0:
            raise InterpError(f"chance_quantile must lie in (0, 1), got {self.chance_quantile!r}")
        if self.questions is not None:
            self.normalise(questions=tuple(self.questions))
        if self.anchor not in ("newline", "label"):
            raise InterpError(f"anchor must be 'newline' or 'label', got {self.anchor!r}")
        if self.questions is not None and not self.questions:
            raise InterpError("no questions given: pass at least one, or questions=None for the shipped mcq task")
        if self.max_questions is not None and not (isinstance(self.max_questions, int) and self.max_questions >= 1):
            raise InterpError(f"max_questions must be None or an int >= 1, got {self.max_questions!r}")
        if not (isinstance(self.top, int) and self.top >= 1):
            raise InterpError(f"top must be an int >= 1, got {self.top!r}")

    def settings(self) -> dict:
        """JSON-friendly settings (questions summarised by count)."""
        out = super().settings()
        qs = out.pop("questions")
        out["questions"] = "shipped mcq" if qs is None else f"{len(qs)} questions"
        return out


def head_predictions(scores: Float[Tensor, "*heads option"]) -> Int[Tensor, "*heads"]:
    """Argmax over options (ties: the first option).

    Args:
        scores: [..., n_options] QK- or attention scores.
    """
    return scores.argmax(-1)


def answer_margin(scores: Float[Tensor, "*heads option"], answer: int) -> Float[Tensor, "*heads"]:
    """Score of the answer minus the best other option's ([...]; > 0: the head picks the answer)."""
    others = torch.cat([scores[..., :answer], scores[..., answer + 1 :]], -1)
    return scores[..., answer] - others.max(-1).values


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

    @property
    def checks(self) -> tuple[Check, ...]:
        """The best head's QK accuracy against the best that as many guessing heads reach by luck.

        Chance for one question is 1 / n_options; the threshold is the ``config.chance_quantile``
        quantile of the best accuracy of ``n_heads`` heads guessing (`chance_level`), so a best
        head below it may be a lucky guesser, not a select-and-copy head.
        """
        n = self.qk_correct[0].size
        best = float(self.qk_accuracy.max()) if self.n_questions else float("nan")
        level = (
            chance_level([1 / self.n_options] * self.n_questions, n, self.config.chance_quantile)
            if self.n_questions
            else float("nan")
        )
        check = above(
            "best_head_above_chance", best, level,
            f"best QK accuracy of {n} heads on {self.n_questions} questions of {self.n_options} options (chance "
            f"{1 / max(self.n_options, 1):.2f}; the model itself: {self.model_accuracy:.2f}) against the "
            f"{self.config.chance_quantile:.0%} quantile of the best of {n} heads guessing at random",
        )  # fmt: skip
        if not level < 1:  # no question, or so few that even a head right on all of them cannot beat guessing
            check = not_tested(check, f"{self.n_questions} question(s): too few to beat guessing; add questions")
        return (check,)

    def top(self, n: int = 5, by: str = "qk") -> list[tuple[int, int, float]]:
        """Best heads [(layer, head, accuracy)] by QK-score ("qk") or attention ("attn") accuracy."""
        return rank_heads(self.qk_accuracy if by == "qk" else self.attn_accuracy, n, layers=self.layers)

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: layer, head, qk_accuracy, attn_accuracy, mean_qk_margin, each followed by its
        spread over questions (``_sd``, ``_ci_low``, ``_ci_high``: Wilson's 95% interval for the
        accuracies, Student-t's for the margin; NaN with one question)."""
        cells = grid_cells(len(self.layers), self.n_heads)
        return pd.DataFrame(
            {
                "layer": np.asarray(self.layers)[cells[0]],
                "head": cells[1],
                "qk_accuracy": self.qk_accuracy[cells],
                **spread_columns("qk_accuracy", proportion_spread(self.qk_correct), cells),
                "attn_accuracy": self.attn_accuracy[cells],
                **spread_columns("attn_accuracy", proportion_spread(self.attn_correct), cells),
                "mean_qk_margin": self.qk_margin.mean(0)[cells],
                **spread_columns("mean_qk_margin", mean_spread(self.qk_margin), cells),
            }
        )

    def questions_dataframe(self) -> pd.DataFrame:
        """questions.csv: question, model_correct."""
        return pd.DataFrame({"question": self.question_ids, "model_correct": self.model_correct})

    def summary(self, n: Optional[int] = None) -> dict:
        """Headline numbers; the best ``n`` heads (default ``config.top``) by each score."""
        n = self.config.top if n is None else n
        return {
            "n_questions": self.n_questions,
            "chance": 1 / self.n_options,
            "chance_best_head": self.chance_best(),
            "model_accuracy": self.model_accuracy,
            "top_qk": [[l, h, round(a, 4)] for l, h, a in self.top(n, "qk")],
            "top_attn": [[l, h, round(a, 4)] for l, h, a in self.top(n, "attn")],
            "checks": as_records(self.checks),
        }


def combine(
    config: SelectCopyConfig,
    model: str,
    layers: Sequence[int],
    n_heads: int,
    questions: Sequence[Question],
    records: Sequence[Mapping],
) -> SelectCopyResult:
    """Per-question option scores -> per-head correctness.

    Args:
        questions: the scored questions (one option count).
        records: per question, in order, ``{"qk": [layer index][head][option] q_N . k_t,
            "attn": [...] A_{N, t}, "choice": the model's letter (option index)}``.
    """
    shape = (len(questions), len(layers), n_heads)
    qk_ok, at_ok, margin = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape)
    model_ok = np.zeros(len(questions), bool)
    for qi, (q, rec) in enumerate(zip(questions, records)):
        qk = torch.tensor(rec["qk"], dtype=torch.float64)
        at = torch.tensor(rec["attn"], dtype=torch.float64)
        qk_ok[qi] = head_predictions(qk).numpy() == q.answer
        at_ok[qi] = head_predictions(at).numpy() == q.answer
        margin[qi] = answer_margin(qk, q.answer).numpy()
        model_ok[qi] = int(rec["choice"]) == q.answer
    n_options = questions[0].n_options if questions else 0
    return SelectCopyResult(
        config, model, tuple(layers), n_heads, tuple(q.id for q in questions), n_options, qk_ok, at_ok, model_ok, margin
    )

"""Multiple-choice questions whose options sit on their own lines (select-and-copy heads).

A prompt lists its options one per line, ``"A. option\\n"``, then ends in ``"Answer:"`` (the
shipped mcq layout, `TEMPLATE`). Questions come from the shipped ``mcq`` choice set (every split,
`interp.datasets.choices`) or from a JSONL file of
``{"question": str, "options": [str, ...], "answer": "B" | 1}`` lines, formatted with the same
template. `option_anchors` finds each option's anchor character (its end-of-line or its letter)
and `anchor_tokens` maps those characters to token indices through a tokenizer's offsets, so
nothing here needs a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from interp.datasets._files import read_user_text
from interp.digest import digest
from interp.errors import InterpError

__all__ = [
    "LETTERS",
    "TEMPLATE",
    "Question",
    "format_prompt",
    "read_questions",
    "shipped_questions",
    "option_anchors",
    "anchor_tokens",
    "option_count",
    "questions_digest",
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
    raw = read_user_text(p, "questions file", 'a UTF-8 JSONL file of {"question", "options", "answer"} lines')
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
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
        if not (
            isinstance(opts, list)
            and 2 <= len(opts) <= len(LETTERS)
            and all(isinstance(o, str) and o.strip() and "\n" not in o for o in opts)
        ):
            raise InterpError(f"{where}: options must be a list of 2-{len(LETTERS)} non-empty one-line strings")
        ans = row["answer"]
        if isinstance(ans, str) and len(ans.strip()) == 1 and ans.strip().upper() in LETTERS[: len(opts)]:
            ans = LETTERS.index(ans.strip().upper())
        if not (isinstance(ans, int) and not isinstance(ans, bool) and 0 <= ans < len(opts)):
            raise InterpError(
                f"{where}: answer {row['answer']!r} must be a letter A-{LETTERS[len(opts) - 1]} or an index 0-{len(opts) - 1}"
            )
        out.append(Question(str(row.get("id", f"line-{n}")), format_prompt(str(row["question"]), opts), len(opts), ans))
    if not out:
        raise InterpError(f"questions file {p} is empty: put one JSON object per line")
    return tuple(out)


def shipped_questions(task: str = "mcq") -> tuple[Question, ...]:
    """Every item (all splits) of a shipped multiple-choice task.

    Raises:
        InterpError: an unknown task, or one that is not multiple choice.
    """
    from interp.datasets.choices import load_choices

    t = load_choices(task)
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


def anchor_tokens(offsets: Sequence[tuple[int, int]], chars: Sequence[int]) -> list[int]:
    """Index of the first token whose character span [a, b) covers each offset in ``chars``.

    Args:
        offsets: per token, its (start, end) characters in the prompt (a fast tokenizer's
            ``offset_mapping``).

    Raises:
        InterpError: an offset no token covers.
    """
    pos = []
    for c in chars:
        hit = [t for t, (a, b) in enumerate(offsets) if a <= c < b]
        if not hit:
            raise InterpError(f"no token covers character {c} of the prompt: the tokenizer's offsets do not match")
        pos.append(hit[0])
    return pos


def option_count(questions: Sequence[Question]) -> int:
    """The number of options every question has.

    Raises:
        InterpError: no questions, or questions with differing option counts.
    """
    counts = {q.n_options for q in questions}
    if not counts:
        raise InterpError("no questions to score: pass at least one")
    if len(counts) != 1:
        raise InterpError(
            f"questions have different numbers of options {sorted(counts)}: give every question the same number"
        )
    return counts.pop()


def questions_digest(questions: Sequence[Question]) -> str:
    """A short sha256 of a question set, stored with a run's settings (resume checks it)."""
    text = "\x00".join(f"{q.id}\x01{q.prompt}\x01{q.answer}" for q in questions)
    return digest(text)

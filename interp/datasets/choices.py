"""Choice sets: small labelled prompts scored by the next-token logits of their answer choices.

A *choice set* is what the calibrations (ACT, ZeroTuning) are chosen on and evaluated on, and
what select-and-copy asks its questions from: every item is one prompt whose answer is one of
the set's ``choices`` (each a short string with a leading space, e.g. " positive", " B"). Items
belong to a split: "calibration" (choose the calibration) or "heldout" (evaluate it). On the
command line a choice set is still named by ``--task`` (a shipped name or a .jsonl path).

File format (JSONL, UTF-8): a header line ``{"task", "kind", "description", "template",
"choices"}``, then one item per line ``{"id", "split", "answer", <template fields>}``. ``answer``
is a choice without its leading space; an ``options`` list fills the template fields A, B, C, ...
Shipped sets live in `interp/data/tasks/` (written for this project): ``sentiment``
(classification) and ``mcq`` (four-option multiple choice). Errors name the file and line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from interp.digest import digest
from interp.errors import InterpError

__all__ = ["ChoiceItem", "ChoiceSet", "available_choice_sets", "load_choices", "parse_choices", "choices_digest"]

_FOLDER = "data/tasks"


@dataclass(frozen=True)
class ChoiceItem:
    """One labelled prompt: ``answer`` indexes its set's ``choices``."""

    id: str
    split: str  # "calibration" or "heldout"
    prompt: str
    answer: int


@dataclass(frozen=True)
class ChoiceSet:
    """A labelled prompt set scored by the next-token logits of its answer choices.

    Attributes:
        name: the header's "task" name.
        kind: e.g. "classification", "multiple_choice".
        description: one line about the set.
        choices: the answer strings (leading space included).
        items: every item, in file order.
    """

    name: str
    kind: str
    description: str
    choices: tuple[str, ...]
    items: tuple[ChoiceItem, ...]

    def split(self, name: str) -> tuple[ChoiceItem, ...]:
        """The items of split ``name``.

        Raises:
            InterpError: the split has no items.
        """
        out = tuple(it for it in self.items if it.split == name)
        if not out:
            raise InterpError(
                f"task '{self.name}' has no items in split '{name}': add items with \"split\": \"{name}\""
            )
        return out


def available_choice_sets() -> list[str]:
    """Names of the shipped choice sets."""
    folder = resources.files("interp").joinpath(_FOLDER)
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def parse_choices(raw: str, name: str) -> ChoiceSet:
    """A choice set from the text of its JSONL file; ``name`` is used in error messages.

    Raises:
        InterpError: an empty file, a line that is not JSON, a header without task, template or
            choices, an item lacking a template field, or an answer that is not a choice. The
            message names the line.
    """
    rows: list[tuple[int, dict]] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(
                f"task '{name}' line {number} is not valid JSON ({err.msg}): write one object per line"
            ) from err
        if not isinstance(row, dict):
            raise InterpError(f"task '{name}' line {number} holds a JSON {type(row).__name__}, not an object")
        rows.append((number, row))
    if not rows:
        raise InterpError(f"task '{name}' is empty: it needs a header line and items")
    (head_line, head), body = rows[0], rows[1:]
    for key in ("task", "template", "choices"):
        if key not in head:
            raise InterpError(f"task '{name}' line {head_line}: the first line must be a header with '{key}'")
    choices = tuple(head["choices"])
    labels = [c.strip() for c in choices]
    items = []
    for n, (number, row) in enumerate(body):
        fields = {k: v for k, v in row.items() if k not in ("id", "split", "answer", "options")}
        for letter, opt in zip("ABCDEFGHIJ", row.get("options", [])):
            fields[letter] = opt
        try:
            prompt = head["template"].format(**fields)
        except KeyError as err:
            raise InterpError(f"task '{name}' item {n + 1} (line {number}) lacks template field {err}") from err
        if row.get("answer") not in labels:
            raise InterpError(
                f"task '{name}' item {n + 1} (line {number}): answer {row.get('answer')!r} is not one of {labels}"
            )
        items.append(
            ChoiceItem(str(row.get("id", n)), str(row.get("split", "heldout")), prompt, labels.index(row["answer"]))
        )
    return ChoiceSet(head["task"], head.get("kind", ""), head.get("description", ""), choices, tuple(items))


def load_choices(name: str) -> ChoiceSet:
    """A shipped choice set by name (see `available_choice_sets`) or a choice-set file path (.jsonl).

    Raises:
        InterpError: an unknown name, a missing or unreadable file, or a bad file (`parse_choices`).
    """
    if name.endswith(".jsonl") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise InterpError(f"task file {path} not found")
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InterpError(f"cannot read task file {path} ({err}): pass a UTF-8 JSONL file") from err
    else:
        shipped = available_choice_sets()
        if name not in shipped:
            raise InterpError(
                f"unknown task '{name}': use a shipped choice set ({', '.join(shipped)}) or a .jsonl path"
            )
        raw = resources.files("interp").joinpath(f"{_FOLDER}/{name}.jsonl").read_text(encoding="utf-8")
    return parse_choices(raw, name)


def choices_digest(choice_set: ChoiceSet) -> str:
    """A short sha256 of a choice set's choices and items, stored with a run's settings."""
    content = [list(choice_set.choices), [asdict(it) for it in choice_set.items]]
    return digest(content)

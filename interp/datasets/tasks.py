"""Tasks for circuit patching: sets of clean/corrupted prompt pairs with their answers.

A *task* (one meaning throughout interp) is what patching runs on: clean and corrupted prompts
of the *same* token length (so that patching by position compares like with like), and the
correct and wrong answer token of every prompt, whose logit difference is the patching metric
(docs/METRICS.md#circuit-patching). It is a `TaskBatch`, built

- by a generator: `interp.datasets.ioi` (Indirect Object Identification, Wang et al. 2022) or
  `interp.datasets.colored_objects` (Merullo et al. 2023), by name through `make_task`;
- from hand-written prompt pairs: `task_from_prompts` (`interp.datasets.task_batch`, re-exported
  here), with the checks patching needs;
- from a *pairs file* (what ``interp patch pairs`` runs): UTF-8 JSONL, one
  ``{"clean", "corrupt", "correct", "wrong"}`` object per line, read by `read_pairs` /
  `task_from_jsonl`, whose errors name the offending line.

Every answer must be a single token for the model's tokenizer (the logit difference compares two
tokens) and a corruption must not change the prompt's length; the messages say what to change.
(The labelled multiple-choice items of the calibrations are *choice sets*, not tasks.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from interp.datasets.colored_objects import ColoredObjectsConfig, colored_objects
from interp.datasets.ioi import IOIConfig, ioi
from interp.datasets.task_batch import TaskBatch, task_from_prompts
from interp.digest import digest
from interp.errors import InterpError

__all__ = [
    "TaskBatch",
    "TASKS",
    "make_task",
    "task_from_prompts",
    "PAIR_KEYS",
    "read_pairs",
    "task_from_jsonl",
    "pairs_digest",
]

TASKS = ("ioi", "colored-objects")  # the generated tasks `make_task` knows by name

PAIR_KEYS = ("clean", "corrupt", "correct", "wrong")  # the keys of one line of a pairs file


def read_pairs(path: Union[str, Path]) -> tuple[list[dict], list[int]]:
    """Read a pairs file: one JSON object ``{"clean", "corrupt", "correct", "wrong"}`` per line.

    Blank lines are skipped; other keys on a line are ignored (e.g. an "id" of your own). Each
    value must be a non-empty string; answers are usually a word with a leading space (" Mary").

    Args:
        path: a JSONL file.

    Returns:
        (records with the four keys, their 1-based line numbers).

    Raises:
        InterpError: a missing or unreadable file, a line that is not a JSON object, a missing
            key or a value that is not a non-empty string (naming the line), or no pairs at all.
    """
    path = Path(path)
    shape = '{"clean": ..., "corrupt": ..., "correct": " Mary", "wrong": " John"}'
    if not path.is_file():
        raise InterpError(f"pairs file {path} not found: pass a JSONL file with one {shape} object per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InterpError(
            f"cannot read pairs file {path} ({err}): pass a UTF-8 text file with one JSON object per line"
        ) from err
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(
                f"{where} is not valid JSON ({err.msg} at column {err.colno}): each line must be one object like {shape}"
            ) from err
        if not isinstance(obj, dict):
            raise InterpError(
                f"{where} holds a JSON {type(obj).__name__}, not an object: write one object like {shape} per line"
            )
        missing = [k for k in PAIR_KEYS if k not in obj]
        if missing:
            raise InterpError(
                f"{where} lacks {', '.join(repr(k) for k in missing)}: every line needs {', '.join(PAIR_KEYS)}"
            )
        bad = [k for k in PAIR_KEYS if not isinstance(obj[k], str) or not obj[k]]
        if bad:
            raise InterpError(f"{where}: {', '.join(repr(k) for k in bad)} must be a non-empty string")
        records.append({k: obj[k] for k in PAIR_KEYS})
        lines.append(number)
    if not records:
        raise InterpError(f"pairs file {path} holds no pairs: write one {shape} object per line")
    return records, lines


def task_from_jsonl(
    tokenizer: Any, path: Union[str, Path], *, task: Optional[str] = None, bos: Optional[int] = None
) -> TaskBatch:
    """A :class:`TaskBatch` from a pairs file (see `read_pairs`), with the checks of the built-in tasks.

    Args:
        tokenizer: the model's tokenizer.
        path: a JSONL file, one ``{"clean", "corrupt", "correct", "wrong"}`` object per line.
        task: the task's name (default: the file name without its extension).
        bos: the token every prompt opens with (`LoadedModel.bos_id`; None: none).

    Raises:
        InterpError: as `read_pairs` and `task_from_prompts`; every message names the line
            (clean and corrupted prompts of different token lengths, prompts of different
            lengths, answers that are not one token, equal answers).
    """
    path = Path(path)
    records, lines = read_pairs(path)
    return task_from_prompts(
        tokenizer,
        *([r[k] for r in records] for k in PAIR_KEYS),
        task=task or path.stem,
        where=[f"{path.name} line {n}" for n in lines],
        bos=bos,
    )


def pairs_digest(path: Union[str, Path]) -> str:
    """A short sha256 of a pairs file's bytes (`interp.digest`), stored with a run's settings (an
    edited file starts a new log)."""
    return digest(Path(path).read_bytes())


def make_task(tokenizer: Any, task: str, n: int = 16, seed: int = 0, *, bos: Optional[int] = None) -> TaskBatch:
    """Generate ``task`` ("ioi" or "colored-objects") with ``n`` prompts from ``seed``, each
    opening with ``bos`` (`LoadedModel.bos_id`; None: none)."""
    if task == "ioi":
        return ioi(tokenizer, IOIConfig(n=n, seed=seed), bos=bos)
    if task in ("colored-objects", "colored_objects", "co"):
        return colored_objects(tokenizer, ColoredObjectsConfig(n=n, seed=seed), bos=bos)
    raise InterpError(f"unknown task '{task}': use one of {', '.join(TASKS)}")

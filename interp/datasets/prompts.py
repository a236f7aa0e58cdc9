"""Prompt files: questions to answer (and optionally the answer to score), one per line.

A prompt file is UTF-8 JSONL, one ``{"id": ..., "prompt": ..., "response": optional}`` object per
line; a missing id becomes ``p<n>``. The shipped set `interp/data/math_prompts.jsonl` holds short
math word problems ending in "Think step by step." (written for this project): the preplan and
anchor analysis scores the model's answers to them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from interp.digest import digest
from interp.errors import InterpError

__all__ = ["Prompt", "load_prompts", "default_prompts", "prompts_digest"]


@dataclass(frozen=True)
class Prompt:
    """One question: ``response`` is the answer to score, None = let the model answer."""

    id: str
    prompt: str
    response: Optional[str] = None


def load_prompts(path: str | Path) -> tuple[Prompt, ...]:
    """Read a prompt file (one ``{"id", "prompt", "response"?}`` object per line).

    Raises:
        InterpError: an unreadable file, a line that is not JSON or has no prompt text, a
            response that is not a string, repeated ids, or no prompts at all (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InterpError(
            f"cannot read prompt file {path} ({getattr(err, 'strerror', None) or err}): "
            'pass a UTF-8 JSONL file with one {"prompt": ...} per line'
        ) from err
    rows: list[Prompt] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(f"{path} line {n} is not JSON ({err.msg}): write one JSON object per line") from err
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise InterpError(f'{path} line {n} has no "prompt" text: each line needs {{"prompt": "..."}}')
        if row.get("response") is not None and not isinstance(row["response"], str):
            raise InterpError(f'{path} line {n}: "response" must be a string when given')
        rows.append(Prompt(str(row.get("id", f"p{len(rows)}")), row["prompt"], row.get("response")))
    if not rows:
        raise InterpError(f'{path} holds no prompts: write one {{"prompt": ...}} per line')
    if len({r.id for r in rows}) != len(rows):
        raise InterpError(f'{path} repeats a prompt "id": give every line a distinct id')
    return tuple(rows)


def default_prompts() -> tuple[Prompt, ...]:
    """The short math word problems shipped with interp (``interp/data/math_prompts.jsonl``)."""
    with resources.as_file(resources.files("interp") / "data" / "math_prompts.jsonl") as path:
        return load_prompts(path)


def prompts_digest(prompts: Sequence[Prompt]) -> str:
    """A short sha256 of a prompt set, stored with a run's settings (same as for the dict form
    ``{"id", "prompt", "response"}`` earlier versions logged, so their folders still resume)."""
    rows = [asdict(p) for p in prompts]
    return digest(rows)

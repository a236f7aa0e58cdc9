"""What a run folder records about itself beyond its results: which command owns it, how long
its parts took, the code it ran, and JSON a strict parser reads.

- A used ``--out`` belongs to one command (`claim_folder`): the command is recorded in run.json
  and in every resume log's settings stamp, and another command is refused there.
- A run resumed over several invocations reports the sum of their wall times: each invocation
  that kept work appends its seconds to ``.interp-parts.jsonl`` (`add_part_time`, `part_times`).
- run.json names the git commit interp ran from when installed from a checkout
  (`checkout_commit`), beside the package version.
- run.json is strict JSON (`strict_json`): a NaN or an infinity becomes null, with the reason.

`interp.runs` re-exports these; this module only keeps that one from growing past a screenful.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from interp.errors import InterpError

__all__ = ["folder_command", "claim_folder", "add_part_time", "part_times", "checkout_commit", "strict_json"]

_PARTS_NAME = ".interp-parts.jsonl"  # wall seconds of each earlier invocation that worked in a folder


def folder_command(folder: str | os.PathLike) -> Optional[str]:
    """The command whose output ``folder`` holds (``"score sinks"``), as its run.json or a
    resume log's settings stamp records it; None for a new folder (or one from before commands
    were recorded)."""
    folder = Path(folder)
    found: list[Any] = []
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        found.append(info.get("command") if isinstance(info, dict) else None)
    except (OSError, ValueError):
        pass
    for log in sorted(folder.glob("*.jsonl")) + sorted(folder.glob("parts/*.jsonl")):
        try:
            with open(log, "rb") as f:
                stamp = json.loads(f.readline())
            found.append(stamp["settings"].get("command"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return next((str(c) for c in found if c), None)


def claim_folder(folder: str | os.PathLike, command: str) -> None:
    """Refuse ``folder`` when another command wrote into it: a used ``--out`` belongs to one
    command, so two commands' tables never sit beside one run.json.

    Raises:
        InterpError: the folder holds another command's output (the message names it).
    """
    other = folder_command(folder)
    if other is not None and other != command:
        raise InterpError(
            f"{folder} holds the output of `interp {other}`: a used --out belongs to one command; "
            f"give `interp {command}` another --out"
        )


def add_part_time(folder: str | os.PathLike, seconds: float) -> None:
    """Record the wall time of one invocation that kept work in ``folder`` (one whole line).

    A failed write only loses the timing: it never stops the run's own error from showing.
    """
    line = json.dumps({"seconds": round(float(seconds), 2)}) + "\n"
    try:
        with open(Path(folder) / _PARTS_NAME, "ab", buffering=0) as f:
            f.write(line.encode("utf-8"))
    except OSError:
        pass


def part_times(folder: str | os.PathLike, *, forget: bool = False) -> list[float]:
    """The wall seconds of the earlier invocations recorded in ``folder`` (`add_part_time`);
    ``forget`` removes the record (a ``--fresh`` start)."""
    path = Path(folder) / _PARTS_NAME
    if forget:
        path.unlink(missing_ok=True)
        return []
    times = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return []
    for raw in lines:
        try:
            times.append(float(json.loads(raw)["seconds"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: that part's time is unknown
    return times


def strict_json(obj: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """``obj`` with every non-finite float (NaN, +-Infinity; numpy's too) replaced by None, and
    ``{dotted.path: reason}`` for each replacement."""
    nulls: dict[str, str] = {}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out[key], inner = strict_json(value, f"{where}.{key}" if where else str(key))
            nulls.update(inner)
        return out, nulls
    if isinstance(obj, (list, tuple)):
        items = []
        for i, value in enumerate(obj):
            item, inner = strict_json(value, f"{where}[{i}]")
            items.append(item)
            nulls.update(inner)
        return items, nulls
    if isinstance(obj, float) or type(obj).__name__ in ("float32", "float64", "float16"):
        x = float(obj)
        if math.isnan(x):
            return None, {where: "NaN: no value here (not measured on this run, or not applicable to this entry)"}
        if math.isinf(x):
            return None, {where: f"{'-' if x < 0 else ''}Infinity: the value is unbounded (e.g. a division by zero)"}
        return x, nulls
    return obj, nulls


def checkout_commit() -> Optional[str]:
    """The git commit interp runs from when installed from a checkout (``+dirty`` when tracked
    files differ from it); None for an installed wheel or where git is missing."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty and head else head or None

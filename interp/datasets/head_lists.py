"""Lists of heads from an earlier run: the heads.csv a retrieval run writes.

AttentionInfluence masks the top retrieval heads of a model; `read_heads` ranks a heads.csv
(columns ``layer``, ``head``, ``score``; `interp score retrieval --out DIR` writes one) by score
and returns its heads, best first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from interp.errors import InterpError

__all__ = ["read_heads", "heads_checks_passed"]


def read_heads(path: str | Path, k: Optional[int] = None) -> tuple[tuple[int, int], ...]:
    """The top ``k`` heads (layer, head) by ``score`` of a retrieval run's heads.csv (None: all, ranked).

    Ties keep the file's order.

    Raises:
        InterpError: a missing or unreadable file, missing columns, or k < 1.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InterpError(
            f"heads file {p} not found: pass the heads.csv of a retrieval run (interp score retrieval --out DIR)"
        )
    if k is not None and not (isinstance(k, int) and k >= 1):
        raise InterpError(f"k (heads to mask) must be an int >= 1, got {k!r}")
    try:
        df = pd.read_csv(p)
    except Exception as err:  # pandas raises several types for bad CSV
        raise InterpError(f"cannot read {p} as CSV ({err}): pass a retrieval run's heads.csv") from err
    missing = {"layer", "head", "score"} - set(df.columns)
    if missing:
        raise InterpError(f"{p} lacks columns {sorted(missing)}: pass a retrieval run's heads.csv (layer, head, score)")
    df = df.sort_values("score", ascending=False, kind="stable")
    if k is not None:
        df = df.head(k)
    return tuple((int(l), int(h)) for l, h in zip(df["layer"], df["head"]))


def heads_checks_passed(path: str | Path) -> Optional[bool]:
    """Whether the run that wrote the heads file ``path`` passed its own checks.

    Reads the ``checks`` of the run.json beside it (`interp.analyses.checks`). None when that is
    not known: no run.json, one without checks, or one that cannot be read.
    """
    import json

    info = Path(path).with_name("run.json")
    try:
        checks = json.loads(info.read_text(encoding="utf-8")).get("checks")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(checks, list) or not checks:
        return None
    return all(isinstance(c, dict) and c.get("passed") is True for c in checks)

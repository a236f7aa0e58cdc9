"""Reading a user's data file: one clear error for every way it can fail.

A data flag (``--texts``, ``--samples``, ``--questions``, ...) names a file the user wrote. It can
be missing, a folder, unreadable (permissions), or not UTF-8 text; each is one `InterpError`
naming the flag's file and what to pass instead, raised before any model loads.
"""

from __future__ import annotations

from pathlib import Path

from interp.errors import InterpError

__all__ = ["read_user_text"]


def read_user_text(path: str | Path, what: str, expected: str) -> str:
    """The text of the data file ``path``, decoded as UTF-8 (a byte-order mark is dropped).

    Args:
        path: the file the user named.
        what: what the file is, for messages, e.g. ``"samples file"``.
        expected: what to pass instead, e.g. ``'a UTF-8 JSONL file of {"query", ...} lines'``.

    Raises:
        InterpError: the path is missing, a folder, unreadable, or not UTF-8 text.
    """
    p = Path(path)
    if p.is_dir():
        raise InterpError(f"{what} {p} is a folder: pass {expected}")
    if not p.exists():
        raise InterpError(f"{what} {p} not found: pass {expected}")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InterpError(
            f"{what} {p} is not UTF-8 text (byte {err.start} cannot be decoded): pass {expected}"
        ) from None
    except OSError as err:
        raise InterpError(f"cannot read {what} {p} ({err.strerror or err}): pass {expected}") from None

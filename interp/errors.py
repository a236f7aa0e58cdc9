"""The package's one error type, and how context is added to an error passing through.

Every failure that a user can cause (bad input, missing weights, out-of-range heads, bad CLI
flags) raises :class:`InterpError` with a message that says what to do about it. `add_note`
attaches a line of context to any error on its way up (``BaseException.add_note`` where Python
has it, 3.11+; on 3.10 the same ``__notes__`` list it reads), without ever hiding that error.
"""

from __future__ import annotations

__all__ = ["InterpError", "add_note"]


class InterpError(Exception):
    """An error caused by input or environment, with a message that spells out the fix."""


def add_note(err: BaseException, note: str) -> None:
    """Attach ``note`` to ``err`` (shown under its traceback) on every supported Python.

    Python 3.11 added ``BaseException.add_note``; on 3.10 the note goes into ``__notes__``
    directly (what 3.11's traceback prints), and an error that takes no attributes keeps none.
    """
    adder = getattr(err, "add_note", None)
    if callable(adder):
        adder(note)
        return
    try:
        notes = getattr(err, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            err.__notes__ = notes
        notes.append(note)
    except (AttributeError, TypeError):  # an error type with __slots__ or a frozen __setattr__
        pass

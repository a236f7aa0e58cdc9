"""Hardening (issue 30) at the unit level: notes on errors under Python 3.10, the one ``--heads``
parser, data files that are no UTF-8 text, checks with three outcomes, strict run.json.

Every test here fails on the code before the issue: each names the old behaviour it guards.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import interp
from interp.errors import InterpError, add_note


class _Py310Error(Exception):
    """An error as Python 3.10 has it: no ``add_note`` method (3.11 added it)."""

    def __getattribute__(self, name):
        if name == "add_note":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_add_note_works_where_errors_have_no_add_note():
    err = _Py310Error("the real error")
    add_note(err, "raised while streaming layers 0-1")  # err.add_note(...) raised AttributeError here
    assert err.__notes__ == ["raised while streaming layers 0-1"]
    native = ValueError("x")
    add_note(native, "a note")
    assert native.__notes__ == ["a note"]


def test_no_module_calls_err_add_note_directly():
    """hooks/stream.py and hooks/capture.py called ``err.add_note``: an AttributeError on 3.10
    that hid the real error. Only `interp.errors.add_note` may."""
    root = Path(interp.__file__).parent
    calls = [
        f"{p.relative_to(root)}:{n}"
        for p in root.rglob("*.py")
        if p.name != "errors.py"
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\w\.add_note\(", line)
    ]
    assert calls == []

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


# --------------------------------------------------------------------------------------------
# The one --heads parser
# --------------------------------------------------------------------------------------------


def test_parse_heads_refuses_a_head_named_twice():
    from interp.experiments.flags import parse_heads

    with pytest.raises(InterpError, match=r"--heads names head 1\.1 twice"):
        parse_heads("1.1,1.1")  # was ((1, 1), (1, 1)): calibrated twice, "2 heads" masked
    with pytest.raises(InterpError, match=r"names head 3\.0 twice"):
        parse_heads("3.0, 2.1,3.0")
    assert parse_heads("1.1,1.2,2.1") == ((1, 1), (1, 2), (2, 1))


def test_parse_heads_empty_message_fits_a_command_that_needs_heads():
    from interp.experiments.flags import parse_heads

    with pytest.raises(InterpError) as err:
        parse_heads("", optional=False)  # `interp attention --heads ""` was told to omit a required flag
    assert "omit" not in str(err.value) and "needs at least one head" in str(err.value)
    with pytest.raises(InterpError, match="or omit it"):
        parse_heads(" , ")


# --------------------------------------------------------------------------------------------
# Data files: a folder, bytes that are not UTF-8, an unreadable file
# --------------------------------------------------------------------------------------------

_READERS = [
    ("interp.datasets.texts", "read_texts", "texts file"),
    ("interp.datasets.documents", "read_samples", "samples file"),
    ("interp.datasets.questions", "read_questions", "questions file"),
]


@pytest.mark.parametrize(("module", "reader", "what"), _READERS)
def test_a_data_file_that_is_not_utf8_is_one_error(tmp_path, module, reader, what):
    import importlib

    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"query": "caf\xe9"}\n')  # samples/questions raised UnicodeDecodeError
    with pytest.raises(InterpError, match=rf"{what} .* is not UTF-8 text \(byte 14"):
        getattr(importlib.import_module(module), reader)(bad)


@pytest.mark.parametrize(("module", "reader", "what"), _READERS)
def test_a_folder_given_as_a_data_file_is_called_a_folder(tmp_path, module, reader, what):
    import importlib

    with pytest.raises(InterpError, match=rf"{what} .* is a folder: pass a UTF-8"):  # was "not found"
        getattr(importlib.import_module(module), reader)(tmp_path)


@pytest.mark.parametrize(("module", "reader", "what"), _READERS)
def test_an_unreadable_data_file_is_one_error(tmp_path, monkeypatch, module, reader, what):
    import errno
    import importlib

    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")

    def denied(self, *args, **kwargs):  # chmod 0 does not stop root, so the read itself is refused
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(InterpError, match=rf"cannot read {what} .*Permission denied"):
        getattr(importlib.import_module(module), reader)(locked)


def test_retrieval_config_refuses_a_negative_or_repeated_seed_before_any_model():
    from interp.analyses.retrieval import RetrievalConfig

    with pytest.raises(InterpError, match=r"seeds must be ints from 0 to 2\*\*32-1"):
        RetrievalConfig(seeds=(-1,))  # was accepted; numpy refused it after the model had loaded
    with pytest.raises(InterpError, match="seeds repeat a value"):
        RetrievalConfig(seeds=(1, 1))  # two identical draws: a zero spread the masking check rests on
    assert RetrievalConfig(seeds=(0, 7)).seeds == (0, 7)

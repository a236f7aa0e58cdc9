"""Bad input to the head commands fails with one `error:` line and exit code 2, before the model loads."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "interp.cli", "score", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("heads", "--kind", "induction,bogus"), "unknown head kind"),
        (("heads", "--texts", "{empty}"), "is empty"),
        (("heads", "--no-random"), "nothing to score"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    proc = _cli(*[a.format(empty=empty) for a in args], "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr


def test_select_copy_malformed_jsonl_names_the_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "x", "options": ["a", "b"], "answer": "A"}\n{"question": "y"}\n')
    proc = _cli("select-copy", "--questions", str(f), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "line 2" in proc.stderr and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_qr_heads_malformed_jsonl_names_the_line(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('{"query": "q", "documents": ["a", "b"], "gold": 5}\n')
    proc = _cli("qr-heads", "--samples", str(f), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "line 1: gold must be" in proc.stderr and "Traceback" not in proc.stderr


def test_influence_bad_input(tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("one text\n---\nanother\n")
    proc = _cli(
        "influence", "--heads", str(tmp_path / "missing.csv"), "--texts", str(texts), "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 2 and "heads file" in proc.stderr and "not found" in proc.stderr, proc.stderr
    proc = _cli("influence", "--heads", "18.x", "--texts", str(texts), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "LAYER.HEAD" in proc.stderr, proc.stderr
    proc = _cli("influence", "--heads", "99.0", "--texts", str(texts), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "head 99.0 out of range" in proc.stderr, proc.stderr

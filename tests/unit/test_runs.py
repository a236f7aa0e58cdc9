"""Run folders (interp.runs): resume logs read line by line, one run per folder, no stale files.

Each test reproduces a failure of issue 23: a torn last line that swallowed the next record, a
foreign file that gave a JSONDecodeError traceback, two processes writing one folder, and
temporary files a kill left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from interp.errors import InterpError
from interp.runs import SampleLog, clean_stale_temps, kept_note, lock_folder, read_log


def _lines(path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_opening_a_log_writes_nothing_until_the_first_record(tmp_path):
    log = SampleLog(tmp_path / "samples.jsonl", {"length": 8})
    assert not (tmp_path / "samples.jsonl").exists()  # a run refused now leaves no stamped log
    log.add("a", {"v": 1})
    assert _lines(tmp_path / "samples.jsonl") == [{"settings": {"length": 8}}, {"id": "a", "v": 1}]


def test_torn_last_line_is_dropped_and_the_next_record_survives(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    log = SampleLog(path, {"length": 8})
    log.add("a", {"v": 1})
    with open(path, "a") as f:
        f.write('{"id": "b", "v"')  # killed mid-write
    resumed = SampleLog(path, {"length": 8})
    assert sorted(resumed.records) == ["a"]
    assert "cut by a kill" in capsys.readouterr().err
    resumed.add("b", {"v": 2})
    resumed.add("c", {"v": 3})
    again = SampleLog(path, {"length": 8})
    assert sorted(again.records) == ["a", "b", "c"]  # before: "b" appended onto the fragment and was lost
    assert _lines(path)[1:] == [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "c", "v": 3}]


def test_a_last_record_without_newline_is_kept_and_closed(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"settings": {"k": 1}}\n{"id": "a", "v": 1}')
    log = SampleLog(path, {"k": 1})
    log.add("b", {"v": 2})
    assert [r["id"] for r in _lines(path)[1:]] == ["a", "b"]


@pytest.mark.parametrize("text", ["garbage\n", '{"id": "a"}\n', "\x00\xff\n"])
def test_foreign_file_is_refused_and_kept(tmp_path, text):
    path = tmp_path / "samples.jsonl"
    path.write_text(text, errors="surrogateescape")
    before = path.read_bytes()
    for fresh in (False, True):  # --fresh never deletes a file that is not a resume log
        with pytest.raises(InterpError, match="not an interp resume log"):
            SampleLog(path, {"k": 1}, fresh=fresh)
    assert path.read_bytes() == before


def test_other_settings_are_refused_with_the_difference(tmp_path):
    path = tmp_path / "samples.jsonl"
    SampleLog(path, {"length": 8, "launch": {"dtype": "float32"}}).add("a", {"v": 1})
    with pytest.raises(InterpError, match=r"launch\.dtype: float32 -> bfloat16.*--fresh"):
        SampleLog(path, {"length": 8, "launch": {"dtype": "bfloat16"}})


def test_a_stamp_without_records_takes_the_new_settings(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"settings": {"length": 8}}\n')  # left by an older version of a refused run
    log = SampleLog(path, {"length": 16})
    log.add("a", {"v": 1})
    assert read_log(path).settings == {"length": 16} and list(read_log(path).records) == ["a"]


_HOLD = textwrap.dedent(
    """
    import sys, time
    from interp.runs import lock_folder
    lock = lock_folder(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_folder_is_locked_against_another_process(tmp_path):
    cmd = [sys.executable, "-c", _HOLD, str(tmp_path)]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(InterpError, match=rf"in use by another interp run \(pid {holder.pid}\)"):
                lock_folder(tmp_path)
        finally:
            holder.stdin.close()
            holder.wait(timeout=60)
    lock = lock_folder(tmp_path)  # the holder's exit released it
    assert lock is not None and (tmp_path / ".interp.lock").read_text().strip() == str(os.getpid())
    again = lock_folder(tmp_path)  # one process shares its own lock
    again.release()
    lock.release()
    assert not (tmp_path / ".interp.lock").exists()


def test_stale_temp_files_are_removed(tmp_path):
    stale = [tmp_path / ".heads.csv.k2j4h5g6.interp-tmp", tmp_path / ".run.json.ab_cd123"]  # new and older names
    keep = [tmp_path / "heads.csv", tmp_path / ".hidden-notes", tmp_path / ".run.json.too-long-to-be-mkstemp"]
    for p in stale + keep:
        p.write_text("x")
    assert sorted(clean_stale_temps(tmp_path)) == sorted(p.name for p in stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_kept_note_counts_units_once_across_parts(tmp_path):
    SampleLog(tmp_path / "samples.jsonl", {"k": 1}).add("a", {})
    part = SampleLog(tmp_path / "parts" / "samples.rank-001-of-002.jsonl", {"k": 1})
    part.add("a", {})
    part.add("b", {})
    note = kept_note(tmp_path)
    assert note.startswith("interrupted: 2 finished unit(s)") and "samples.jsonl" in note and "resume" in note
    assert "nothing kept" in kept_note(tmp_path / "empty")

"""The CLI and run folders under the cases of issue 30: nothing mixed, no traceback.

A run is resumed only on the same weights (their content, not their name), a used ``--out``
belongs to one command, and each bad input below is one ``error:`` line with exit code 2 that
leaves nothing behind. Commands run in this process through `interp.cli.main`, on a tiny random
Llama (a HF folder) or a tiny GGUF written here; none downloads anything.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import sys
from pathlib import Path

import pytest
from helpers import clear_launch_env, save_tiny_llama, write_gguf

from interp.errors import InterpError


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    clear_launch_env(monkeypatch)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-30"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("INTERP_CACHE", str(folder))
    return folder


def cli(monkeypatch, *argv) -> int:
    """``interp ARGV`` in this process; returns the exit code main() gives the shell."""
    from interp.cli import main

    monkeypatch.setattr(sys, "argv", ["interp", *map(str, argv)])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def no_model(monkeypatch):
    """Make loading a model an error the test would see: the refusal must come before it."""
    import interp.distributed

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(interp.distributed, "rank_model", refuse)


# --------------------------------------------------------------------------------------------
# Resume identity by content
# --------------------------------------------------------------------------------------------


def _stamped_log(lm, folder: Path):
    """A store bound to ``lm`` with a log holding one finished unit (what an interrupted run leaves)."""
    from interp.experiments import Store

    store = Store(folder, command="score sinks")
    store.bind(lm)
    store.log({"length": 32}).add("t0", {"rate": 0.5})
    store.close()


def _resume(lm, folder: Path):
    from interp.experiments import Store

    store = Store(folder, command="score sinks")
    try:
        store.bind(lm)
        return store.log({"length": 32})
    finally:
        store.close()


def test_a_gguf_replaced_in_place_or_renamed_elsewhere_is_another_model(cache, tmp_path):
    from interp import load_model

    (tmp_path / "a").mkdir()
    first = write_gguf(tmp_path / "a" / "model.gguf", seed=0)
    run = tmp_path / "run"
    _stamped_log(load_model(str(first)), run)
    assert len(_resume(load_model(str(first)), run)) == 1  # the same file resumes

    write_gguf(first, seed=1)  # replaced in place: same path, same name, other weights
    with pytest.raises(InterpError, match=r"other settings \(launch\.weights: gguf-sha256:[0-9a-f]{16} -> gguf-"):
        _resume(load_model(str(first)), run)  # was resumed: the stamp held the basename only

    (tmp_path / "b").mkdir()
    other = write_gguf(tmp_path / "b" / "model.gguf", seed=2)  # the same basename in another folder
    with pytest.raises(InterpError, match="launch.weights"):
        _resume(load_model(str(other)), run)
    assert sorted(p.name for p in run.iterdir()) == ["samples.jsonl"]  # the log alone, kept


def test_a_hf_folder_whose_weights_change_is_refused_and_hashes_are_cached(tiny_model, cache, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from interp import load_model
    from interp._identity import folder_digest

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    run = tmp_path / "run"
    _stamped_log(load_model(str(folder)), run)
    digests = json.loads((cache / "weights-digests.json").read_text())
    assert str((folder / "model.safetensors").resolve()) in digests  # hashed once, cached by path, size, mtime

    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + torch.full_like(weights[name], 1e-3)  # same size, other content
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InterpError, match=r"launch\.weights: sha256:[0-9a-f]{64} -> sha256:"):
        _resume(load_model(str(folder)), run)
    assert folder_digest(folder) == folder_digest(folder)  # stable, and the second call reads the cache


# --------------------------------------------------------------------------------------------
# One command per --out
# --------------------------------------------------------------------------------------------


def test_another_command_into_a_used_out_is_refused_and_keeps_the_folder(monkeypatch, capsys, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"command": "score sinks", "summary": {}}))
    (out / "sinks.csv").write_text("layer,rate\n0,0.5\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    no_model(monkeypatch)
    assert cli(monkeypatch, "patch", "ioi", "--n", 2, "--out", out) == 2  # was accepted: two runs' tables
    line = one_error_line(capsys.readouterr().err)
    assert "holds the output of `interp score sinks`" in line and "`interp patch ioi` another --out" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no lock, no log, nothing changed


def test_a_used_out_is_known_by_its_log_stamp_before_any_run_json(tmp_path):
    from interp.runs import claim_folder, folder_command

    out = tmp_path / "interrupted"
    out.mkdir()
    (out / "samples.jsonl").write_text(json.dumps({"settings": {"command": "score retrieval"}}) + "\n")
    assert folder_command(out) == "score retrieval"
    claim_folder(out, "score retrieval")  # the same command resumes
    with pytest.raises(InterpError, match="holds the output of `interp score retrieval`"):
        claim_folder(out, "calibrate act")


# --------------------------------------------------------------------------------------------
# Bad input: one error line, exit 2, refused before the model loads, nothing left behind
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("calibrate", "act", "--heads", "1.1,1.1"),  # was calibrated twice: other numbers than --heads 1.1
        ("calibrate", "zerotune", "--heads", "1.1,1.1"),
        ("score", "influence", "--heads", "1.1,1.1", "--texts", "{texts}"),  # reported "2 heads"
        ("score", "retrieval", "--seed", "-1"),  # failed after the model loaded, leaving a stamp
    ],
)
def test_bad_heads_and_seeds_are_refused_before_the_model_loads(monkeypatch, capsys, tmp_path, argv):
    no_model(monkeypatch)
    out = tmp_path / "o"
    texts = tmp_path / "texts.txt"
    texts.write_text("One text.\n---\nAnother text.\n")
    assert cli(monkeypatch, *(str(texts) if a == "{texts}" else a for a in argv), "--out", out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert ("twice" in line) if "--heads" in argv else ("seeds must be ints from 0" in line)
    assert not out.exists()


def test_attention_with_empty_heads_names_the_cause(monkeypatch, capsys, tmp_path):
    no_model(monkeypatch)
    assert cli(monkeypatch, "attention", "--heads", "", "--out", tmp_path / "o") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "needs at least one head" in line and "omit" not in line  # was told to omit a required flag


@pytest.mark.parametrize(("command", "flag"), [("qr-heads", "--samples"), ("select-copy", "--questions")])
def test_a_data_file_that_is_not_utf8_is_one_error_line(monkeypatch, capsys, tmp_path, command, flag):
    no_model(monkeypatch)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe not text\n")
    assert cli(monkeypatch, "score", command, flag, bad, "--out", tmp_path / "o") == 2  # was a traceback
    assert "is not UTF-8 text" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_model_that_is_a_plain_file_is_called_a_file(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    assert cli(monkeypatch, "attention", "--heads", "0.0", "--model", bad, "--out", tmp_path / "o") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "is a file, not a model" in line and "the folder" not in line  # was "the folder ... is not complete"


def test_a_malicious_pickle_is_refused_as_one_line_and_runs_nothing(tiny_model, monkeypatch, capsys, tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    for f in tiny_model.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, evil / f.name)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    assert cli(monkeypatch, "attention", "--heads", "0.0", "--model", evil, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("Loading")]
    assert len(lines) == 1 and "refused to load model" in lines[0] and "nothing was run" in lines[0], err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_hostile_chat_template_is_one_error(tiny_model, tmp_path):
    from interp import load_model

    folder = tmp_path / "hostile"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    lm = load_model(str(folder))
    with pytest.raises(InterpError, match=r"chat template of model .* failed \(SecurityError"):
        lm.chat_prompt("hi")  # was jinja2's SecurityError as a traceback


# --------------------------------------------------------------------------------------------
# patch overlap on damaged folders
# --------------------------------------------------------------------------------------------


def _patch_folder(path: Path, run_json: bytes, patch_csv: bytes = b"layer,head,score\n0,0,1.0\n") -> Path:
    path.mkdir()
    (path / "run.json").write_bytes(run_json)
    (path / "patch.csv").write_bytes(patch_csv)
    return path


@pytest.mark.parametrize(
    ("run_json", "patch_csv", "says"),
    [
        (b"[1, 2]", b"layer,head,score\n0,0,1.0\n", "no result layout"),  # was TypeError
        (b'{"result": "caf\xe9"}', b"layer,head,score\n0,0,1.0\n", "cannot be read as JSON"),  # not UTF-8
        (b'{"result": {"task": "ioi"}}', b"", "is not the patch.csv of a patching run"),  # empty: EmptyDataError
    ],
)
def test_patch_overlap_on_a_damaged_run_folder_is_one_error(monkeypatch, capsys, tmp_path, run_json, patch_csv, says):
    a = _patch_folder(tmp_path / "a", run_json, patch_csv)
    assert cli(monkeypatch, "patch", "overlap", a, a) == 2
    assert says in one_error_line(capsys.readouterr().err)


def test_patch_overlap_refuses_a_bad_out_before_printing_its_result(monkeypatch, capsys, tmp_path):
    import interp.commands.patching as overlap_cmd

    class Run:
        model, task = "m", "ioi"

    class Overlap:
        shared, share, jaccard = ((0, 0),), 1.0, 1.0

    monkeypatch.setattr(overlap_cmd, "load_run", lambda folder: Run())
    monkeypatch.setattr("interp.analyses.patching.circuit_overlap", lambda a, b, top: Overlap())
    taken = tmp_path / "file"
    taken.write_text("x")
    assert cli(monkeypatch, "patch", "overlap", tmp_path, tmp_path, "--out", taken) == 2
    captured = capsys.readouterr()
    assert "is a file" in one_error_line(captured.err) and captured.out == ""  # the result was printed first


# --------------------------------------------------------------------------------------------
# A full disk, SIGTERM
# --------------------------------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_on_a_table_write_is_one_error_and_keeps_the_old_table(monkeypatch, tmp_path):
    import interp.runs as runs

    table = tmp_path / "heads.csv"
    table.write_text("layer,head\n0,0\n")
    monkeypatch.setattr(runs.os, "fsync", _enospc)
    with pytest.raises(InterpError, match=r"cannot write .*heads\.csv \(No space left on device\): free space"):
        runs.atomic_write_text(table, "layer,head\n1,1\n")  # was a bare OSError traceback
    assert table.read_text() == "layer,head\n0,0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["heads.csv"]  # no temporary file left


def test_a_full_disk_mid_append_leaves_no_torn_line(monkeypatch, tmp_path):
    import io

    import interp.runs as runs

    log = runs.SampleLog(tmp_path / "samples.jsonl", {"a": 1})
    log.add("u0", {"x": 1.0})
    whole = (tmp_path / "samples.jsonl").read_bytes()
    real_open = open

    class HalfWrites(io.FileIO):
        def write(self, data):  # the disk fills after half of the line
            super().write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

    def opener(path, mode="r", buffering=-1, **kwargs):
        if "b" in mode and buffering == 0 and "r+" in mode:
            return HalfWrites(path, "r+")
        return real_open(path, mode, buffering, **kwargs)

    monkeypatch.setattr(sys.modules[runs.SampleLog.__module__], "open", opener, raising=False)  # where the log writes
    with pytest.raises(InterpError, match="No space left on device"):
        log.add("u1", {"x": 2.0})
    monkeypatch.undo()
    assert (tmp_path / "samples.jsonl").read_bytes() == whole  # cut back: was half a line for the next run
    again = runs.SampleLog(tmp_path / "samples.jsonl", {"a": 1})
    assert list(again.records) == ["u0"]
    again.add("u1", {"x": 2.0})
    assert list(runs.read_log(tmp_path / "samples.jsonl").records) == ["u0", "u1"]


def test_sigterm_is_treated_as_ctrl_c_exit_143(monkeypatch, capsys, tmp_path):
    import interp.distributed

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a scheduler's time limit does
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(interp.distributed, "rank_model", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert cli(monkeypatch, "attention", "--heads", "0.0", "--out", tmp_path / "o") == 143  # was killed silently
    err = capsys.readouterr().err
    assert "terminated (SIGTERM)" in err and "nothing" in err
    assert not (tmp_path / "o").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # main() restores the handler it replaced


def test_the_report_claims_its_folder_too(monkeypatch, capsys, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"command": "patch ioi"}))
    no_model(monkeypatch)
    assert cli(monkeypatch, "report", "--quick", "--out", out) == 2  # was accepted: run.json overwritten
    assert "holds the output of `interp patch ioi`" in one_error_line(capsys.readouterr().err)
    assert json.loads((out / "run.json").read_text()) == {"command": "patch ioi"}

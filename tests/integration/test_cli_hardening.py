"""The CLI under interruption, resumption and bad input (issue 23, items 1-6).

Commands run in this process through `interp.cli.main` (its exit code and stderr, as a script
sees them), on a tiny random Llama saved with the embedded SmolLM2 tokenizer where a model is
needed. Every failure must be one ``error:`` line with exit code 2 and leave nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import clear_launch_env, save_tiny_llama


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    clear_launch_env(monkeypatch)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Llama (2 layers, 6 heads) with the embedded SmolLM2 tokenizer, as a HF folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-cli"))


def cli(monkeypatch, *argv) -> int:
    """``interp ARGV`` in this process; returns the exit code main() gives the shell."""
    from interp.cli import main

    monkeypatch.setattr(sys, "argv", ["interp", *map(str, argv)])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def one_error_line(err: str, *, loaded: bool = False) -> str:
    """The one ``error:`` line of stderr, which holds nothing else (``loaded``: but the model
    loader's progress bar) and no traceback."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    if loaded:
        lines = [ln for ln in lines if not ln.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def sinks(model, out, *more) -> list:
    return ["score", "sinks", "--model", model, "--length", 32, "--max-texts", 3, "--out", out, *more]


# --------------------------------------------------------------------------------------------
# 1-2. Ctrl-C exits 130 and says what was kept; a resume must agree on the launch settings
# --------------------------------------------------------------------------------------------


def test_ctrl_c_before_any_work_exits_130_and_leaves_nothing(monkeypatch, capsys, tmp_path):
    import interp.distributed

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(interp.distributed, "rank_model", interrupted)
    assert cli(monkeypatch, "score", "sinks", "--out", tmp_path / "o") == 130  # was 0: typer's code was dropped
    err = capsys.readouterr().err
    assert "interrupted before any unit of work finished" in err and "nothing kept" in err
    assert not (tmp_path / "o").exists()


def test_ctrl_c_keeps_finished_units_and_resume_refuses_other_launch_settings(
    tiny_model, monkeypatch, capsys, tmp_path
):
    import interp.experiments.sinks as sinks_module

    real, calls = sinks_module.scan_window, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "o"
    monkeypatch.setattr(sinks_module, "scan_window", flaky)
    assert cli(monkeypatch, *sinks(tiny_model, out)) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 1 finished unit(s) of work kept in {out.resolve()} (samples.jsonl)" in err
    assert "re-run the same command to resume" in err and not (out / "heads.csv").exists()
    log = (out / "samples.jsonl").read_text()

    monkeypatch.setattr(sinks_module, "scan_window", real)
    assert cli(monkeypatch, "--dtype", "bfloat16", *sinks(tiny_model, out)) == 2  # was 0, tables of mixed precision
    line = one_error_line(capsys.readouterr().err, loaded=True)
    assert "launch.dtype: float32 -> bfloat16" in line and "--fresh" in line
    assert (out / "samples.jsonl").read_text() == log and not (out / "heads.csv").exists()

    computed = []

    def counting(*args, **kwargs):
        computed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sinks_module, "scan_window", counting)
    assert cli(monkeypatch, *sinks(tiny_model, out)) == 0
    assert len(computed) == 2  # the finished unit was not computed again
    info = json.loads((out / "run.json").read_text())
    assert {k: v for k, v in info["launch"].items() if k != "weights"} == {
        "dtype": "float32", "attn_implementation": "sdpa", "model_backend": "hf", "device": "cpu", "device_map": None,
        "prepend_bos": False, "kernel_backend": "torch",
    }  # fmt: skip
    assert info["launch"]["weights"].startswith("sha256:")  # the weights' content hash (issue 30)
    stamp = json.loads((out / "samples.jsonl").read_text().splitlines()[0])["settings"]
    assert stamp["launch"] == info["launch"]


# --------------------------------------------------------------------------------------------
# 3-5. Foreign logs, one run per folder, refused runs leave no trace
# --------------------------------------------------------------------------------------------


def test_foreign_resume_log_is_one_error_line(tiny_model, monkeypatch, capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "samples.jsonl").write_text("garbage\n")
    assert cli(monkeypatch, *sinks(tiny_model, out)) == 2  # was a JSONDecodeError traceback (exit 1)
    assert "not an interp resume log" in one_error_line(capsys.readouterr().err, loaded=True)
    assert (out / "samples.jsonl").read_text() == "garbage\n"


_HOLD = textwrap.dedent(
    """
    import sys
    from interp.runs import lock_folder
    lock = lock_folder(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_second_run_into_a_busy_folder_is_refused_and_deletes_nothing(monkeypatch, capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "samples.jsonl").write_text('{"settings": {"length": 32}}\n{"id": "text-00000"}\n')
    cmd = [sys.executable, "-c", _HOLD, str(out)]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as first:
        try:
            assert first.stdout.readline().strip() == "locked"
            assert cli(monkeypatch, "score", "sinks", "--out", out, "--fresh") == 2
            line = one_error_line(capsys.readouterr().err)
            assert f"in use by another interp run (pid {first.pid})" in line
        finally:
            first.stdin.close()
            first.wait(timeout=60)
    assert (out / "samples.jsonl").exists()  # --fresh of the second run did not delete the first run's log


def test_refused_runs_leave_no_trace_and_stale_temps_go(tiny_model, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "o"
    assert cli(monkeypatch, *sinks(tiny_model, out, "--backend", "triton")) == 2
    assert "--backend triton" in one_error_line(capsys.readouterr().err, loaded=True)
    assert not out.exists()
    assert cli(monkeypatch, *sinks(tiny_model, out)[:-2], "--length", 100000, "--out", out) == 2  # context overflow
    assert "exceeds the context" in one_error_line(capsys.readouterr().err, loaded=True)
    assert not out.exists()

    out.mkdir()
    stale = out / ".heads.csv.k2j4h5g6.interp-tmp"  # a kill during the final writes
    stale.write_bytes(b"x" * 1000)
    assert cli(monkeypatch, *sinks(tiny_model, out)) == 0  # the corrected command, without --fresh
    assert not stale.exists() and (out / "heads.csv").exists()
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == [".interp-parts.jsonl"]  # no lock or temp file left; the parts' wall times are a record


# --------------------------------------------------------------------------------------------
# 6. Ignored, contradicting or unbounded options; usage errors as one line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, says",
    [
        (["patch", "ioi", "--compare"], "--compare has no effect without --method attribution"),
        (["calibrate", "zerotune", "--gamma", "1", "--gammas", "0.5,2"], "--gamma and --gammas contradict each other"),
        (["calibrate", "act", "--heads", "1.2", "--candidates", "4"], "--heads and --candidates contradict each other"),
        (["score", "retrieval", "--no-mask", "--mask-top", "3"], "--mask-top has no effect without --mask"),
        (
            ["score", "retrieval", "--mode", "decode", "--response", "answer"],
            "--response has no effect without --mode teacher",
        ),
        (["patch", "ioi", "--n", "100000"], "--n 100000: use from 1 to 1024"),
        (["score", "sinks", "--out", ""], "--out is empty"),
        (["bogus"], "No such command 'bogus'"),
        (["score", "sinks", "--length", "abc"], "Invalid value for '--length'"),
        (["--device-map", "bogus", "info"], "unknown --device-map 'bogus'"),
    ],
)
def test_bad_options_are_one_error_line_before_any_work(argv, says, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli(monkeypatch, *argv) == 2
    assert says in one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())  # nothing written, not even an output folder


def test_influence_k_beyond_the_heads_file_or_with_pairs_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    Path("heads.csv").write_text("layer,head,score\n0,1,0.5\n1,2,0.4\n1,0,0.1\n")
    Path("texts.txt").write_text("one text\n---\nanother text\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli(monkeypatch, "score", "influence", "--heads", "heads.csv", "--texts", "texts.txt", "--k", 100000) == 2
    assert "--k 100000: use from 1 to 3 (heads.csv lists 3 heads)" in one_error_line(capsys.readouterr().err)
    assert cli(monkeypatch, "score", "influence", "--heads", "0.1,1.2", "--texts", "texts.txt", "--k", 1) == 2
    assert "--k has no effect without a heads.csv" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before

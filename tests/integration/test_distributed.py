"""Rank-sharded runs (interp.distributed) on the CPU machine: two gloo processes launched by
torchrun on a tiny random Llama give the files of a one-process run; a killed rank resumes;
bad launches fail with one clear error and write nothing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from helpers import clear_launch_env, cli, records, same_tables, save_tiny_llama, torchrun

from interp.errors import InterpError


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    """These tests choose their own rank layout; none leaks in from the shell."""
    clear_launch_env(monkeypatch)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random GQA Llama with the embedded SmolLM2 tokenizer, saved as a HF folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-dist"))


# --------------------------------------------------------------------------------------------
# Two gloo ranks = one process, per command
# --------------------------------------------------------------------------------------------


def test_sinks_two_ranks_equal_one_process(tiny_model, tmp_path, monkeypatch):
    args = ["score", "sinks", "--model", tiny_model, "--length", 16, "--max-texts", 5, "--min-queries", 2]
    proc = torchrun(*args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli(monkeypatch, *args, "--out", tmp_path / "one") == 0
    same_tables(tmp_path / "one", tmp_path / "two", ["heads.csv", "sinks.csv", "layers.csv", "token_types.csv"])
    # rank r scanned texts r, r+2, ...: its part holds exactly those; rank 0 merged all in order
    parts = sorted((tmp_path / "two" / "parts").glob("samples.rank-*-of-002.jsonl"))
    assert [sorted(records(p)) for p in parts] == [
        ["text-00000", "text-00002", "text-00004"],
        ["text-00001", "text-00003"],
    ]
    merged = records(tmp_path / "two" / "samples.jsonl")
    assert list(merged) == [f"text-{n:05d}" for n in range(5)]
    assert merged == records(tmp_path / "one" / "samples.jsonl")
    assert json.loads((tmp_path / "two" / "run.json").read_text())["ranks"] == 2


def test_preplan_two_ranks_equal_one_process(tiny_model, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps(
                {"id": f"q{i}", "prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}. " * 4}
            )
            + "\n"
            for i in range(3)
        )
    )
    args = [
        "score",
        "preplan",
        "--model",
        tiny_model,
        "--prompts",
        prompts,
        "--layers",
        "0,1",
        "--band-lo",
        2,
        "--band-hi",
        8,
    ]
    proc = torchrun(*args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli(monkeypatch, *args, "--out", tmp_path / "one") == 0
    same_tables(tmp_path / "one", tmp_path / "two", ["tokens.csv", "heads.csv"])
    assert [sorted(records(p)) for p in sorted((tmp_path / "two" / "parts").glob("*.jsonl"))] == [["q0", "q2"], ["q1"]]


def test_zerotune_two_ranks_equal_one_process(tiny_model, tmp_path, monkeypatch):
    args = ["calibrate", "zerotune", "--model", tiny_model, "--gammas", "0.5,2", "--batch-size", 8]
    proc = torchrun(*args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli(monkeypatch, *args, "--out", tmp_path / "one") == 0
    same_tables(tmp_path / "one", tmp_path / "two", ["accuracy.csv", "search.csv", "items.csv", "heads.csv"])
    assert records(tmp_path / "one" / "samples.jsonl") == records(tmp_path / "two" / "samples.jsonl")


# --------------------------------------------------------------------------------------------
# A killed rank, resumed; bad launches
# --------------------------------------------------------------------------------------------

_SQUARES = textwrap.dedent(
    """
    import os, sys, json
    from interp.distributed import map_units, open_log, world
    from interp.errors import InterpError

    out, mode = sys.argv[1], sys.argv[2]
    w = world()
    try:
        settings = {"task": "squares", "skew": w.rank if mode == "skew" else 0}
        log = open_log(os.path.join(out, "samples.jsonl"), settings)

        def compute(key):
            n = int(key.split("-")[1])
            with open(os.path.join(out, f"computed-{mode}-rank{w.rank}.txt"), "a") as f:
                f.write(key + "\\n")
            if mode == "kill" and w.rank == 1 and n >= 3:
                os._exit(9)  # killed mid-unit, after finishing unit-1
            return {"square": n * n}

        got = map_units([f"unit-{i}" for i in range(6)], compute, log=log, what="units")
    except InterpError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if w.main:
        print(json.dumps({k: v["square"] for k, v in got.items()}))
    """
)


def _computed(folder: Path, mode: str) -> list[str]:
    return [ln for f in sorted(folder.glob(f"computed-{mode}-rank*.txt")) for ln in f.read_text().split()]


def test_killed_rank_resumes_every_part(tmp_path):
    script = tmp_path / "squares.py"
    script.write_text(_SQUARES)
    out = tmp_path / "out"
    out.mkdir()
    killed = torchrun(out, "kill", script=script)
    assert killed.returncode != 0
    merged = out / "samples.jsonl"  # rank 0 may be stopped before it even opens it (loaded machine)
    assert not merged.exists() or not merged.read_text().splitlines()[1:]  # no merge without every part
    saved = {k for p in (out / "parts").glob("*.jsonl") for k in records(p)}
    assert "unit-1" in saved and "unit-3" not in saved  # rank 1 kept the unit it finished

    resumed = torchrun(out, "resume", script=script)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == {f"unit-{i}": i * i for i in range(6)}
    redone = _computed(out, "resume")
    assert not set(redone) & saved  # nothing finished before the kill was computed again
    assert set(redone) | saved == {f"unit-{i}" for i in range(6)}
    assert list(records(out / "samples.jsonl")) == [f"unit-{i}" for i in range(6)]


def test_ranks_with_different_settings_are_refused(tmp_path):
    script = tmp_path / "squares.py"
    script.write_text(_SQUARES)
    proc = torchrun(tmp_path, "skew", script=script)
    assert proc.returncode != 0
    assert "different settings" in proc.stderr and "same command" in proc.stderr
    assert not (tmp_path / "samples.jsonl").exists() and not (tmp_path / "parts").exists()


def test_more_ranks_than_texts_is_an_error(tiny_model, tmp_path):
    proc = torchrun("score", "sinks", "--model", tiny_model, "--length", 16, "--max-texts", 1, "--out", tmp_path / "o")
    assert proc.returncode != 0
    assert "2 ranks but only 1 sinks: texts" in proc.stderr and "at most 1 processes" in proc.stderr
    assert not (tmp_path / "o" / "heads.csv").exists() and not (tmp_path / "o" / "parts").exists()


def test_world_size_without_a_process_group(tiny_model, tmp_path, monkeypatch, capsys):
    from interp.distributed import world

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InterpError, match="RANK is not"):
        world()
    monkeypatch.setenv("RANK", "0")
    args = ["score", "sinks", "--model", tiny_model, "--length", 16, "--max-texts", 2, "--out", tmp_path / "o"]
    assert cli(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert "no process group" in err and "MASTER_ADDR" in err and "torchrun" in err
    assert not (tmp_path / "o" / "samples.jsonl").exists()


# --------------------------------------------------------------------------------------------
# Parts in one process (no launcher needed)
# --------------------------------------------------------------------------------------------


def test_one_process_resumes_parts_of_a_killed_two_rank_run(tmp_path):
    from interp.distributed import map_units, open_log, part_path
    from interp.runs import SampleLog

    settings = {"task": "squares"}
    SampleLog(part_path(tmp_path / "samples.jsonl", 1, 2), settings).add("unit-1", {"square": 1})
    calls = []

    def compute(key):
        calls.append(key)
        return {"square": int(key[5:]) ** 2}

    log = open_log(tmp_path / "samples.jsonl", settings)
    got = map_units([f"unit-{i}" for i in range(3)], compute, log=log)
    assert calls == ["unit-0", "unit-2"]
    assert [r["square"] for r in got.values()] == [0, 1, 4]
    assert sorted(records(tmp_path / "samples.jsonl")) == ["unit-0", "unit-1", "unit-2"]  # main log complete


def test_part_from_another_run_is_refused_and_kept(tmp_path):
    from interp.distributed import map_units, open_log, part_path
    from interp.runs import SampleLog

    stale = part_path(tmp_path / "samples.jsonl", 0, 2)
    SampleLog(stale, {"task": "cubes"}).add("unit-0", {"square": 0})
    before = stale.read_text()
    log = open_log(tmp_path / "samples.jsonl", {"task": "squares"})
    with pytest.raises(InterpError, match="part of another run.*--fresh"):
        map_units(["unit-0"], lambda key: {"square": 0}, log=log)
    assert stale.read_text() == before
    assert not (tmp_path / "samples.jsonl").exists()  # refused before any unit: no log written
    open_log(tmp_path / "samples.jsonl", {"task": "squares"}, fresh=True)  # --fresh clears the parts
    assert not stale.exists()


def test_duplicate_unit_ids_are_refused():
    from interp.distributed import map_units

    with pytest.raises(InterpError, match="duplicate prompts ids"):
        map_units(["a", "b", "a"], lambda key: {}, what="prompts")

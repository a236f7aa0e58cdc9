"""`score retrieval` and `patch` on two gloo ranks (torchrun) equal one process; a patch re-run
resumes every pass from the ranks' parts. Helpers from tests/helpers.py."""

from __future__ import annotations

import pytest
from helpers import clear_launch_env, cli, records, same_tables, save_tiny_llama, torchrun


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    """These tests choose their own rank layout; none leaks in from the shell."""
    clear_launch_env(monkeypatch)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-dist"))


def test_retrieval_two_ranks_equal_one_process(tiny_model, tmp_path, monkeypatch):
    args = [
        "score",
        "retrieval",
        "--model",
        tiny_model,
        "--lengths",
        "200",
        "--depths",
        "0.3,0.7",
        "--min-recall",
        0,
        "--mask-top",
        2,
        "--seed",
        0,
        "--no-progress",
    ]  # every sample counted: masking runs
    proc = torchrun(*args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli(monkeypatch, *args, "--out", tmp_path / "one") == 0
    same_tables(tmp_path / "one", tmp_path / "two", ["heads.csv", "samples.csv"], drop=("seconds",))
    masking = sorted((tmp_path / "two" / "parts").glob("masking-*.rank-*-of-002.jsonl"))
    assert len(masking) == 2 and all(records(p) for p in masking)  # the masking check was shared too
    assert len(records(tmp_path / "two" / "samples.jsonl")) == 6


def test_patch_two_ranks_equal_one_process_and_resume(tiny_model, tmp_path, monkeypatch):
    args = ["patch", "ioi", "--model", tiny_model, "--layers", "0-1", "--batch-rows", 8]  # 12 passes
    proc = torchrun(*args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli(monkeypatch, *args, "--out", tmp_path / "one") == 0
    same_tables(tmp_path / "one", tmp_path / "two", ["patch.csv"])
    parts = lambda: sorted((tmp_path / "two" / "parts").glob("patch_log.rank-*-of-002.jsonl"))  # noqa: E731
    assert [len(records(p)) for p in parts()] == [6, 6]  # the patch index was split by passes
    again = torchrun(*args, "--out", tmp_path / "two")  # resumes every pass from the parts
    assert again.returncode == 0 and "resuming: " in again.stderr, again.stderr[-3000:]
    assert [len(records(p)) for p in parts()] == [6, 6]  # nothing patched again
    same_tables(tmp_path / "one", tmp_path / "two", ["patch.csv"])

"""Two gloo ranks (torchrun) on the embedded SmolLM2 at small size write the tables and the
log of a one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow

_DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_STEP_NUM_TASKS",
)


def test_sinks_two_ranks_equal_one_process_on_the_embedded_model(embedded, tmp_path, monkeypatch):
    from interp.cli import main

    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    # `embedded` has converted and cached the weights, so both ranks load from the cache.
    args = ["score", "sinks", "--length", "32", "--max-texts", "3", "--layers", "0,5,12,20,29"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "interp", *args]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    monkeypatch.setattr(sys, "argv", ["interp", *args, "--out", str(tmp_path / "one")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1)
    try:
        main()
    finally:
        torch.set_num_threads(threads)

    for name in ["heads.csv", "sinks.csv", "layers.csv", "token_types.csv"]:
        one, two = pd.read_csv(tmp_path / "one" / name), pd.read_csv(tmp_path / "two" / name)
        assert len(one) > 0, name
        pd.testing.assert_frame_equal(one, two, check_exact=True, obj=name)
    log = lambda d: (tmp_path / d / "samples.jsonl").read_text().splitlines()  # noqa: E731
    assert log("one") == log("two") and len(log("two")) == 4  # header + 3 texts, merged in order
    assert len(list((tmp_path / "two" / "parts").glob("samples.rank-*-of-002.jsonl"))) == 2
    assert json.loads((tmp_path / "two" / "run.json").read_text())["ranks"] == 2

"""`--engine ray` on a local 2-CPU Ray cluster: the tables and resume files of a one-process run.

Skipped only when ray is not installed (`pip install 'interp[ray]'`; `make install` installs it)."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from interp.models import _embedded_weights_dir

    tok = AutoTokenizer.from_pretrained(_embedded_weights_dir())
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        attn_implementation="sdpa",
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-ray")
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cli(monkeypatch, *argv) -> int:
    from interp.cli import main

    monkeypatch.setattr(sys, "argv", ["interp", *map(str, argv)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each actor runs 1 thread on 2 CPUs shared by 2 actors
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        torch.set_num_threads(threads)
    return 0


def _log(path):
    return {json.loads(ln)["id"]: json.loads(ln) for ln in path.read_text().splitlines()[1:]}


def test_ray_engine_equals_one_process_and_resumes(local_ray, tiny_model, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = ["score", "sinks", "--model", tiny_model, "--length", 16, "--max-texts", 5, "--min-queries", 2]
    assert _cli(monkeypatch, "--engine", "ray", "--workers", 2, *args, "--out", tmp_path / "ray") == 0
    assert _cli(monkeypatch, *args, "--out", tmp_path / "one") == 0
    for name in ("heads.csv", "sinks.csv", "layers.csv", "token_types.csv"):
        one, got = pd.read_csv(tmp_path / "one" / name), pd.read_csv(tmp_path / "ray" / name)
        assert len(one) > 0
        pd.testing.assert_frame_equal(one, got, check_exact=True, obj=name)
    assert _log(tmp_path / "ray" / "samples.jsonl") == _log(tmp_path / "one" / "samples.jsonl")

    # resume: drop two finished texts from the log; a ray re-run computes exactly those again
    log = tmp_path / "ray" / "samples.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:4]) + "\n")
    before = (tmp_path / "ray" / "heads.csv").read_text()
    (tmp_path / "ray" / "heads.csv").unlink()
    assert _cli(monkeypatch, "--engine", "ray", "--workers", 2, *args, "--out", tmp_path / "ray") == 0
    assert (tmp_path / "ray" / "heads.csv").read_text() == before
    assert sorted(_log(log)) == [f"text-{n:05d}" for n in range(5)]


def test_ray_map_python_api_and_errors(local_ray):
    from interp.distributed import map_units
    from interp.errors import InterpError

    def square(key):
        if key == "bad":
            raise InterpError("unit bad is bad: fix it")
        return int(key) ** 2

    ray = {"engine": "ray", "workers": 2, "progress": False}
    assert map_units([str(i) for i in range(6)], square, **ray) == {str(i): i * i for i in range(6)}
    with pytest.raises(InterpError, match="unit bad is bad"):
        map_units(["1", "bad"], square, **ray)

"""Helpers shared by test modules (test modules import from here, never from each other).

Distributed runs (tests/integration/test_distributed*.py): the launcher's environment, a tiny
random GQA Llama saved as a HF folder, torchrun and the one-process CLI, table comparison and
resume logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_STEP_NUM_TASKS",
)


def clear_launch_env(monkeypatch) -> None:
    """Remove every launcher variable, so a test chooses its own rank layout."""
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)


def save_tiny_llama(path: Path) -> Path:
    """A tiny random GQA Llama with the embedded SmolLM2 tokenizer, saved as a HF folder at ``path``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from interp.models import _embedded_weights_dir

    tok = AutoTokenizer.from_pretrained(_embedded_weights_dir())
    torch.manual_seed(0)
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
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def torchrun(*args, nproc: int = 2, script: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m interp ARGS` (or a script), as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    target = [str(script)] if script is not None else ["-m", "interp"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *target,
        *map(str, args),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**env, "COLUMNS": "200"})


def cli(monkeypatch, *argv) -> int:
    """The same command in this process (one rank), with one thread like each torchrun rank
    (OMP_NUM_THREADS=1): another thread count changes float reductions, not the sharding."""
    from interp.cli import main

    monkeypatch.setattr(sys, "argv", ["interp", *map(str, argv)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        torch.set_num_threads(threads)
    return 0


def same_tables(a: Path, b: Path, names, drop=()) -> None:
    """The tables ``names`` of folders ``a`` and ``b`` are equal (exactly) and not empty."""
    for name in names:
        left, right = pd.read_csv(a / name), pd.read_csv(b / name)
        left, right = (
            left.drop(columns=[c for c in drop if c in left]),
            right.drop(columns=[c for c in drop if c in right]),
        )
        assert len(left) > 0, name
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=name)


def records(path: Path) -> dict:
    """The records of a resume log (after its settings line), by id."""
    lines = path.read_text().splitlines()[1:]
    return {json.loads(ln)["id"]: json.loads(ln) for ln in lines}

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


# tiny GGUF files (tests/integration/test_gguf.py, test_cli_hardening_content.py)
_D, _LAYERS, _HEADS, _KV, _FF = 32, 2, 4, 2, 64
GGUF_LAYERS, GGUF_HEADS, GGUF_KV = _LAYERS, _HEADS, _KV  # the tiny GGUF's shape, for tests that check it
_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "a n", "Ġ a", "e r", "o n"]


def write_gguf(path: Path, arch: str = "llama", *, tensors: bool = True, seed: int = 0) -> Path:
    """A tiny GGUF: a random 2-layer GQA Llama (float32) with a byte-level BPE tokenizer."""
    import gguf
    import numpy as np
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in _MERGES] + ["<s>", "</s>"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(128)
    w.add_embedding_length(_D)
    w.add_block_count(_LAYERS)
    w.add_feed_forward_length(_FF)
    w.add_head_count(_HEADS)
    w.add_head_count_kv(_KV)
    w.add_rope_dimension_count(_D // _HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 2) + [3, 3])
    w.add_token_merges(_MERGES)
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    if tensors:
        rng = np.random.default_rng(seed)

        def rand(*shape):
            return (rng.standard_normal(shape) * 0.2).astype(np.float32)

        kv = _D * _KV // _HEADS
        w.add_tensor("token_embd.weight", rand(len(tokens), _D))
        w.add_tensor("output_norm.weight", np.ones(_D, np.float32))
        w.add_tensor("output.weight", rand(len(tokens), _D))
        for i in range(_LAYERS):
            for name, shape in [
                ("attn_q", (_D, _D)),
                ("attn_k", (kv, _D)),
                ("attn_v", (kv, _D)),
                ("attn_output", (_D, _D)),
                ("ffn_gate", (_FF, _D)),
                ("ffn_up", (_FF, _D)),
                ("ffn_down", (_D, _FF)),
            ]:
                w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
            w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(_D, np.float32))
            w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(_D, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def random_pair(vocab: int, n: int, n_pos: int, changed: list[int], seed: int, spread: int):
    """A clean / corrupted token batch for patching tests: ``n`` random prompts of ``n_pos`` tokens,
    the corrupted copy redrawn at the ``changed`` positions, a random correct answer per prompt and
    a wrong one ``1..spread`` ids after it (mod ``vocab``), all from one seeded generator."""
    from interp.datasets.tasks import TaskBatch

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, n_pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, changed] = torch.randint(0, vocab, (n, len(changed)), generator=g)
    correct = torch.randint(0, vocab, (n,), generator=g)
    wrong = (correct + 1 + torch.randint(0, spread, (n,), generator=g)) % vocab
    return TaskBatch.from_tokens(clean, corrupt, correct, wrong)

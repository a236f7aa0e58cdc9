"""The embedded SmolLM2-135M-Instruct: loading, caching, hooks on both backends, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from interp.errors import InterpError
from interp.hooks import capture

pytestmark = pytest.mark.slow


def test_embedded_model_facts_and_a_known_fact(embedded):
    a = embedded.arch
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.d_head, a.n_ctx) == (30, 9, 3, 64, 8192)
    # Capture does not switch the model to eager attention: SDPA is routed through interp only
    # while a capture is attached, and the model gets its own SDPA back afterwards.
    from interp.hooks import capture

    assert embedded.hf_model.config._attn_implementation == "sdpa"
    with capture(embedded, layers=[0], keep=("q",)):
        assert embedded.hf_model.config._attn_implementation == "interp_sdpa"
    assert embedded.hf_model.config._attn_implementation == "sdpa"
    assert all(s.scale == 0.125 and s.sliding_window is None and s.softcap is None for s in a.attention)
    logits = embedded.forward(embedded.encode("The capital of France is"))
    assert embedded.decode([int(logits[0, -1].argmax())]).strip() == "Paris"


def test_cached_load_does_not_convert_again(embedded, monkeypatch):
    """A second load reads the cached float32 copy: the GGUF conversion (~20-30 s) never runs."""
    import interp._embedded as embedded_module
    from interp.models import load_model

    def convert(*args, **kwargs):
        raise AssertionError("the GGUF was converted again although the cache holds it")

    monkeypatch.setattr(embedded_module, "convert_gguf", convert)
    again = load_model()
    ids = embedded.encode("Hello there")
    assert torch.equal(again.forward(ids), embedded.forward(ids))


def test_hf_and_tl_backends_capture_the_same_qkv(embedded):
    from interp.models import load_model

    tl = load_model(backend="tl")
    assert tl.backend == "tl" and tl.model.__class__.__name__ == "TransformerBridge"
    ids = embedded.encode("Alice gave Bob a book because she liked him.")
    layers = [0, 14, 29]
    with capture(embedded, layers=layers, keep=("q", "k", "v", "z", "resid_pre")) as hf_cap:
        hf_logits = embedded.forward(ids)
    with capture(tl, layers=layers, keep=("q", "k", "v", "z", "resid_pre")) as tl_cap:
        tl_logits = tl.forward(ids)
    # Token alignment: we pass ids, so the bridge adds no BOS and positions agree.
    assert tl_cap["q", 0].shape == hf_cap["q", 0].shape
    for layer in layers:
        for site in ("q", "k", "v", "z", "resid_pre"):
            a, b = hf_cap[site, layer], tl_cap[site, layer]
            assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), (site, layer, (a - b).abs().max())
    assert torch.allclose(hf_logits, tl_logits, atol=5e-3)


def test_prompt_longer_than_context(embedded):
    with pytest.raises(InterpError, match="context of 8192 tokens"):
        embedded.encode("word " * 9000)


def test_unknown_model_offline_says_how_to_get_it():
    code = (
        "import interp\n"
        "try:\n    interp.load_model('no-such-org/no-such-model')\n"
        "except interp.InterpError as e:\n    print('MSG', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "MSG cannot load model 'no-such-org/no-such-model'" in out
    assert "huggingface-cli download no-such-org/no-such-model" in out


def test_missing_local_folder_is_explained(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InterpError, match="not a complete HuggingFace model"):
        from interp.models import load_model

        load_model(str(tmp_path))


def test_cli_info_prints_real_output():
    exe = os.path.join(os.path.dirname(sys.executable), "interp")
    res = subprocess.run([exe, "info", "--top", "3"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout and "30 layers" in res.stdout
    bad = subprocess.run([exe, "info", "--top", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--top" in (bad.stderr + bad.stdout)

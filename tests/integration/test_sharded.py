"""Sharded (accelerate ``device_map``, disk offload) and low-precision models capture and score
like the plain float32 model; statistics are accumulated in float32 whatever the model dtype."""

from __future__ import annotations

import pytest
import torch
from families import SEQ, VOCAB, build, tokenizer

from interp.errors import InterpError
from interp.hooks import ablate_head, capture, intervene
from interp.kernels import attention_stats
from interp.models import load_model

SITES = ("q", "k", "v", "z", "resid_post")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-mistral")
    build("mistral").save_pretrained(folder)  # GQA with a sliding window shorter than SEQ
    tokenizer().save_pretrained(folder)
    return folder


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def _run(lm, edits=()):
    with intervene(lm, list(edits)), capture(lm, keep=SITES) as cap:
        logits = lm.forward(_ids())
    return logits, cap


def test_layers_offloaded_to_disk_capture_and_edit_like_the_plain_model(saved, tmp_path):
    plain = load_model(str(saved))
    layout = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    sharded = load_model(str(saved), device_map=layout, offload_folder=tmp_path / "offload")
    assert set(sharded.hf_model.hf_device_map.values()) == {"cpu", "disk"}
    for edits in ((), (ablate_head(1, 2), ablate_head(2, 0))):
        want, a = _run(plain, edits)
        got, b = _run(sharded, edits)
        assert torch.allclose(got, want, atol=1e-5)
        for layer in range(3):
            for site in SITES:
                assert torch.allclose(b[site, layer], a[site, layer], atol=1e-5), (site, layer)
    edited, _ = _run(sharded, (ablate_head(1, 2),))
    assert not torch.allclose(edited, _run(sharded)[0], atol=1e-4)  # the edit on a disk layer took effect


def test_device_map_auto_with_a_memory_cap_offloads_and_still_captures(saved, tmp_path):
    plain = load_model(str(saved))
    capped = load_model(str(saved), device_map="auto", max_memory={"cpu": "60KB"}, offload_folder=tmp_path / "off")
    assert "disk" in set(capped.hf_model.hf_device_map.values())  # the cap forced weights off the CPU
    want, a = _run(plain)
    got, b = _run(capped)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(b["q", 2], a["q", 2], atol=1e-5)


def test_max_memory_without_device_map_is_refused(saved):
    with pytest.raises(InterpError, match="need device_map"):
        load_model(str(saved), max_memory={"cpu": "1GB"})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_score_in_float32(saved, dtype):
    half = load_model(str(saved), dtype=dtype)
    full = load_model(str(saved))
    _, h = _run(half)
    _, f = _run(full)
    assert h["q", 1].dtype == dtype
    for layer in range(3):
        q, k = h["q", layer], h["k", layer]
        kwargs = half.attention_kwargs(layer)
        st = attention_stats(q, k, **kwargs, backend="torch")
        ref = attention_stats(q.double(), k.double(), **kwargs, backend="reference")
        assert st.entropy.dtype == torch.float32
        # float32 accumulation of the same half-precision q and k: float32 round-off only.
        assert torch.allclose(st.entropy.double(), ref.entropy, atol=1e-5)
        assert torch.allclose(st.recv_mean.double(), ref.recv_mean, atol=1e-5)
        # Against the float32 model the statistics differ only by the half-precision inputs.
        st32 = attention_stats(f["q", layer], f["k", layer], **full.attention_kwargs(layer), backend="torch")
        assert torch.allclose(st.entropy, st32.entropy, atol=0.05)

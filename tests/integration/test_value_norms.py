"""`Capture.value_norms`: ||v_j|| and ||W_O^h v_j|| against the model's own output projection.

The independent computation runs each layer's o_proj module itself (Linear or GPT-2's Conv1D,
bias included) on an input that holds v_j in head h's slot and zeros elsewhere, minus the same
module on zeros (the bias is added once per position and belongs to no key). Every family of the
adapter table (MHA, GQA, Gemma 3's config with windows and soft-cap, biases), and the
TransformerLens bridge over a GQA Llama.
"""

from __future__ import annotations

import copy

import pytest
import torch
from families import FAMILIES, SEQ, VOCAB, build

from interp.errors import InterpError
from interp.hooks import capture, value_norms
from interp.models import wrap_model

TOL = 1e-5


def _ids(b: int = 2, t: int = SEQ, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def _through_o_proj(lm, layer: int, v: torch.Tensor) -> torch.Tensor:
    """[batch, head, pos] ||o_proj(v_j in head h's slot) - o_proj(0)||, in float64."""
    proj64 = copy.deepcopy(getattr(lm.adapter.attention(lm, layer), lm.adapter.layout.o_proj)).double()
    a = lm.arch
    b, _, t, d = v.shape
    out = torch.empty(b, a.n_heads, t, dtype=torch.float64)
    zero = proj64(torch.zeros(b, t, a.n_heads * d, dtype=torch.float64))
    for h in range(a.n_heads):
        x = torch.zeros(b, t, a.n_heads, d, dtype=torch.float64)
        x[:, :, h] = v[:, a.kv_map[h]].double()
        out[:, h] = (proj64(x.reshape(b, t, -1)) - zero).norm(dim=-1)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_value_norms_match_the_output_projection(family):
    lm = wrap_model(build(family), None, name=family)
    with capture(lm, keep=("v", "z", "attn_out")) as cap:
        lm.forward(_ids())
    for layer in range(lm.arch.n_layers):
        v = cap["v", layer]
        norms = cap.value_norms(layer)
        assert norms.value.shape == v.shape[:3] and norms.output.shape == (2, lm.arch.n_heads, SEQ)
        assert torch.allclose(norms.value.double(), v.double().norm(dim=-1), rtol=TOL, atol=TOL)
        want = _through_o_proj(lm, layer, v)
        assert torch.allclose(norms.output.double(), want, rtol=TOL, atol=TOL), (family, layer)
        # The weights are the ones the model uses: the heads' W_O z_h sum to attn_out minus the bias.
        w = lm.adapter.head_output_weights(lm, layer).double()
        z = cap["z", layer].double()
        heads_sum = torch.einsum("bhtd,hdm->btm", z, w)
        proj = getattr(lm.adapter.attention(lm, layer), lm.adapter.layout.o_proj)
        bias = proj.bias.double() if getattr(proj, "bias", None) is not None else 0.0
        assert torch.allclose(heads_sum + bias, cap["attn_out", layer].double(), atol=1e-4), (family, layer)


def test_value_norms_differ_per_head_under_gqa():
    """Query heads of one kv group share v_j but not W_O^h: their ||W_O^h v_j|| must differ."""
    lm = wrap_model(build("llama"), None, name="llama")
    with capture(lm, layers=[1], keep=("v",)) as cap:
        lm.forward(_ids())
    out = cap.value_norms(1).output
    assert lm.arch.kv_map[0] == lm.arch.kv_map[1]
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3


def test_transformer_lens_bridge_gives_the_same_norms(tmp_path, monkeypatch):
    from families import tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build("llama")
    model.save_pretrained(tmp_path)
    tokenizer().save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    hf = wrap_model(model, tok, name="llama")
    tl = wrap_model(reloaded, tok, name="llama", backend="tl", source=str(tmp_path))
    ids = _ids(b=1)
    with capture(hf, keep=("v",)) as a:
        hf.forward(ids)
    with capture(tl, keep=("v",)) as b:
        tl.forward(ids)
    for layer in range(hf.arch.n_layers):
        got, want = b.value_norms(layer), a.value_norms(layer)
        assert torch.allclose(got.value, want.value, atol=TOL)
        assert torch.allclose(got.output, want.output, atol=TOL)
        assert torch.allclose(got.output.double(), _through_o_proj(hf, layer, a["v", layer]), atol=TOL)


def test_value_norms_refuse_values_of_another_shape():
    lm = wrap_model(build("llama"), None, name="llama")
    with pytest.raises(InterpError, match="is not layer 0's values"):
        value_norms(lm, 0, torch.randn(1, lm.arch.n_heads, 4, lm.arch.d_head))
    with capture(lm, layers=[0], keep=("q",)) as cap:
        lm.forward(_ids())
    with pytest.raises(InterpError, match="site 'v' was not kept"):
        cap.value_norms(0)


def test_streaming_hands_the_captured_values_to_the_callback():
    from interp.hooks import stream_layers

    lm = wrap_model(build("llama"), None, name="llama")
    ids = _ids()
    with capture(lm, keep=("v",)) as cap:
        lm.forward(ids)
    got = {}
    stream_layers(lm, ids, [0, 2], lambda layer, q, k, v: got.setdefault(layer, v), values=True)
    assert sorted(got) == [0, 2]
    for layer in (0, 2):
        assert torch.equal(got[layer], cap["v", layer])

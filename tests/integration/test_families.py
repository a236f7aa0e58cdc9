"""Every row of the adapter table, on a tiny random model of its family (see `families`).

For each family: the captured post-RoPE q and k, reduced by `attention_stats` with the layer's
own settings (`lm.attention_kwargs`), reproduce the probabilities of the model's own eager
attention (entropy, top-1, column mean) to 1e-5; the sliding window, soft-cap and sink logits
are checked to matter (dropping them breaks the match); uniform attention and zero ablation
have their defined effect; capture works on every attention implementation the family offers
and leaves no routing behind.
"""

from __future__ import annotations

import pytest
import torch
from families import FAMILIES, SEQ, VOCAB, build

from interp.hooks import ablate_head, capture, intervene, uniform_attention
from interp.kernels import attention_stats
from interp.models import wrap_model

TOL = 1e-5


def _ids(b: int = 2, t: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def _eager_twin(model):
    family = model.config.model_type
    twin = build(family, "eager")
    twin.load_state_dict(model.state_dict())
    return twin


def _eager_stats(p: torch.Tensor, window: int | None = None) -> dict[str, torch.Tensor]:
    """Entropy, top-1 and column mean of dense probabilities p [batch, head, query, key] (float64).

    The column mean of key j is over the queries that may see it: i >= j, and i - j < window
    on a sliding-window layer."""
    p = p.double()
    t = p.shape[-1]
    logp = torch.where(p > 0, p.clamp_min(1e-300).log(), torch.zeros_like(p))
    seen_by = torch.arange(t, 0, -1, dtype=torch.float64).clamp(max=window or t)  # i >= j, i - j < W
    return {"entropy": -(p * logp).sum(-1), "top1": p.argmax(-1), "recv_mean": p.sum(-2) / seen_by}


def _max_errors(st, ref) -> tuple[float, float, bool]:
    return (
        float((st.entropy.double() - ref["entropy"]).abs().max()),
        float((st.recv_mean.double() - ref["recv_mean"]).abs().max()),
        bool(torch.equal(st.top1, ref["top1"])),
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_kernel_with_layer_settings_reproduces_eager_attention(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids()
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    with torch.no_grad():
        eager = _eager_twin(model)(ids, output_attentions=True).attentions
    for layer in range(lm.arch.n_layers):
        kwargs = lm.attention_kwargs(layer)
        ref = _eager_stats(eager[layer], kwargs.get("sliding_window"))
        for backend in ("reference", "torch"):
            st = attention_stats(cap["q", layer], cap["k", layer], **kwargs, backend=backend)
            ent, col, top1 = _max_errors(st, ref)
            assert ent < TOL and col < TOL and top1, (family, layer, backend, ent, col)
        # Each setting the family has must matter: without it the numbers are wrong.
        for name, plain in (("sliding_window", None), ("softcap", None), ("sink_logits", None)):
            if kwargs.get(name) is None:
                continue
            st = attention_stats(cap["q", layer], cap["k", layer], **{**kwargs, name: plain}, backend="torch")
            ent, col, top1 = _max_errors(st, ref)
            assert max(ent, col) > 1e-3 or not top1, (family, layer, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_attention_and_zero_ablation_have_their_defined_effect(family):
    lm = wrap_model(build(family), None, name=family)
    ids = _ids()
    layer, head = 0, 1
    kv = lm.arch.kv_map[head]
    with intervene(lm, [uniform_attention(layer, head)]), capture(lm, layers=[layer], keep=("v", "z")) as cap:
        lm.forward(ids)
    # Uniform over the keys the head may see: j <= i, and i - j < W on a windowed layer. A
    # learned sink logit s keeps its share: each visible key gets 1 / (n_visible + e^s).
    settings = lm.attention_kwargs(layer)
    i, j = torch.arange(SEQ)[:, None], torch.arange(SEQ)[None, :]
    visible = (j <= i) & ((i - j) < (settings["sliding_window"] or SEQ + 1))
    weights = visible.double()
    sinks = settings.get("sink_logits")
    extra = float(sinks[head].exp()) if sinks is not None else 0.0
    weights = weights / (weights.sum(-1, keepdim=True) + extra)
    expected = weights @ cap["v", layer][:, kv].double()
    assert torch.allclose(cap["z", layer][:, head].double(), expected, atol=TOL), family

    # Zero-ablating every head of a layer = replacing the attention block's output by o_proj(0).
    with intervene(lm, [ablate_head(1, h) for h in range(lm.arch.n_heads)]):
        ablated = lm.forward(ids)
    attn = lm.adapter.attention(lm, 1)
    proj = getattr(attn, lm.adapter.layout.o_proj)
    bias = proj.bias if getattr(proj, "bias", None) is not None else torch.zeros(lm.arch.d_model)

    def hook(mod, args, out):
        return (torch.zeros_like(out[0]) + bias, *out[1:])

    handle = attn.register_forward_hook(hook)
    try:
        with torch.no_grad():
            removed = lm.hf_model(ids).logits
    finally:
        handle.remove()
    assert torch.allclose(ablated, removed, atol=TOL), family
    assert not torch.allclose(ablated, lm.forward(ids), atol=1e-3), family  # the ablation did something


def _implementations(family: str) -> list[str]:
    from families import config

    from interp.models import _default_attention

    cfg = config(family)
    return ["eager"] if _default_attention(cfg) == "eager" else ["eager", "sdpa"]


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_on_every_implementation_matches_and_leaves_no_routing(family):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    ids = _ids()
    captured = {}
    for attn in _implementations(family):
        model = build(family, attn)
        with torch.no_grad():
            plain = model(ids).logits
        lm = wrap_model(model, None, name=family)
        with capture(lm, keep=("q", "k", "z")) as cap:
            assert model.config._attn_implementation == f"interp_{attn}"
            logits = lm.forward(ids)
        assert model.config._attn_implementation == attn  # given back on exit
        assert torch.allclose(logits, plain, atol=TOL), (family, attn)  # capturing changes nothing
        captured[attn] = cap
    assert not [n for n in AttentionInterface._global_mapping if n.startswith("interp_")]
    assert not [n for n in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping if n.startswith("interp_")]
    if len(captured) == 2:
        for layer in range(3):
            for site in ("q", "k", "z"):
                assert torch.allclose(captured["eager"][site, layer], captured["sdpa"][site, layer], atol=TOL)


# Families whose transformer-lens 4.x bridge reproduces the HF model and fires every hook; the
# others must be refused with a clear error (Gemma 3: the bridge changes the logits; GPT-NeoX and
# Phi-3: fused qkv, the rotary hooks never fire; Phi: q/k layernorm not declared by the bridge).
TL_REFUSED = {
    "gemma3_text": "does not reproduce",
    "gpt_neox": "does not expose",
    "phi3": "does not expose",
    "phi": "cannot bridge",
}


def _saved(family: str, folder) -> tuple:
    """The family's tiny model saved with a word-level tokenizer, as a user's folder would be."""
    from families import tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build(family)
    model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return model, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_and_transformer_lens_backends_agree_or_tl_is_refused(family, tmp_path, monkeypatch):
    from interp.errors import InterpError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, reloaded, tok = _saved(family, tmp_path)
    hf = wrap_model(model, tok, name=family)
    if family in TL_REFUSED:
        with pytest.raises(InterpError, match="(?is)" + TL_REFUSED[family] + ".*use backend='hf'"):
            wrap_model(reloaded, tok, name=family, backend="tl", source=str(tmp_path))
        return
    tl = wrap_model(reloaded, tok, name=family, backend="tl", source=str(tmp_path))
    ids = _ids(b=1)
    with capture(hf, keep=("q", "k", "z", "resid_post")) as a:
        hf_logits = hf.forward(ids)
    with capture(tl, keep=("q", "k", "z", "resid_post")) as b:
        tl_logits = tl.forward(ids)
    assert torch.allclose(hf_logits, tl_logits, atol=TOL)
    for layer in range(3):
        for site in ("q", "k", "z", "resid_post"):
            assert torch.allclose(a[site, layer], b[site, layer], atol=TOL), (family, site, layer)
        st_hf = attention_stats(a["q", layer], a["k", layer], **hf.attention_kwargs(layer), backend="torch")
        st_tl = attention_stats(b["q", layer], b["k", layer], **tl.attention_kwargs(layer), backend="torch")
        assert torch.allclose(st_hf.entropy, st_tl.entropy, atol=TOL)


def test_flex_attention_is_wrapped_too():
    """flex_attention (compiled on first use, so one family only: Gemma 2 has both a window and a
    soft-cap, which flex applies through its score and mask functions)."""
    ids = _ids()
    model = build("gemma2", "flex_attention")
    with torch.no_grad():
        eager = _eager_twin(model)(ids, output_attentions=True)
    lm = wrap_model(model, None, name="gemma2")
    with capture(lm, keep=("q", "k")) as cap:
        assert model.config._attn_implementation == "interp_flex_attention"
        logits = lm.forward(ids)
    assert model.config._attn_implementation == "flex_attention"
    assert torch.allclose(logits, eager.logits, atol=TOL)
    for layer in range(3):
        kwargs = lm.attention_kwargs(layer)
        st = attention_stats(cap["q", layer], cap["k", layer], **kwargs, backend="torch")
        ent, col, top1 = _max_errors(st, _eager_stats(eager.attentions[layer], kwargs.get("sliding_window")))
        assert ent < TOL and col < TOL and top1, layer


def test_an_implementation_interp_cannot_wrap_is_refused():
    from interp.errors import InterpError

    model = build("llama")
    model.config._attn_implementation = "paged|eager"
    with pytest.raises(InterpError, match="cannot wrap: load it with attn_implementation="):
        wrap_model(model, None, name="llama")


def test_a_layer_kind_the_kernel_cannot_reproduce_is_refused():
    from interp.errors import InterpError

    model = build("qwen2")
    model.config.layer_types = ["full_attention", "chunked_attention", "full_attention"]
    with pytest.raises(
        InterpError, match="layer 1 .* 'chunked_attention' attention, which the statistics kernel cannot"
    ):
        wrap_model(model, None, name="qwen2")


def test_unsupported_and_unknown_families_name_the_fix():
    from interp.errors import InterpError
    from interp.hooks import adapter_for

    with pytest.raises(InterpError, match="'falcon' is not supported: .*AttentionInterface.*Supported are"):
        adapter_for("falcon")
    with pytest.raises(InterpError, match="no hook adapter for model type 'bert'.*gpt_oss.*Add a row"):
        adapter_for("bert")


def test_a_layer_whose_settings_change_after_wrapping_is_refused_not_misread():
    from interp.errors import InterpError

    model = build("gemma2")
    lm = wrap_model(model, None, name="gemma2")
    lm.adapter.attention(lm, 1).scaling *= 2  # the kernel would now use the wrong scale
    with pytest.raises(InterpError, match="layer 1 ran with scale"):
        with capture(lm, keep=("q",)):
            lm.forward(_ids())
    lm.adapter.attention(lm, 1).scaling /= 2
    lm.adapter.attention(lm, 2).attn_logit_softcapping = 7.0
    with pytest.raises(InterpError, match="layer 2 ran with soft-cap 7.0 but interp read 2.0"):
        with capture(lm, keep=("q",)):
            lm.forward(_ids())


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_decoding_under_capture_needs_a_full_cache_and_then_matches_the_full_pass(family):
    from interp.errors import InterpError

    model = build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids(b=1)
    # HF's default cache keeps only the last W keys of windowed layers: refused, not misread.
    with pytest.raises(InterpError, match=r"dropped keys.*lm\.new_cache\(\)"):
        with capture(lm, keep=("k",)):
            past = model(ids[:, :-1], use_cache=True).past_key_values
            model(ids[:, -1:], past_key_values=past, use_cache=True)
    # With lm.new_cache() the decode step's q/k give the same statistics as the full pass's last row.
    cache = lm.new_cache()
    with capture(lm, keep=("q", "k")) as step:
        model(ids[:, :-1], past_key_values=cache, use_cache=True)
        model(ids[:, -1:], past_key_values=cache, use_cache=True)
    with capture(lm, keep=("q", "k")) as full:
        lm.forward(ids)
    for layer in range(3):
        kw = lm.attention_kwargs(layer)
        a = attention_stats(step["q", layer], step["k", layer], **kw, backend="torch", columns=False)
        b = attention_stats(full["q", layer], full["k", layer], **kw, backend="torch", columns=False)
        assert torch.equal(a.top1[..., -1], b.top1[..., -1])
        assert torch.allclose(a.entropy[..., -1], b.entropy[..., -1], atol=TOL)
        assert torch.allclose(a.sink[..., -1], b.sink[..., -1], atol=TOL)

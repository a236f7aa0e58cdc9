"""Hooks on tiny random HF models (GPT-2 MHA, Llama GQA, Qwen2 GQA with qkv bias): no downloads."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InterpError
from interp.hooks import (
    Edit,
    ablate_head,
    capture,
    intervene,
    key_bias,
    patch_head,
    scale_head,
    uniform_attention,
)
from interp.models import wrap_model


def _config(family: str):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=101, attn_implementation="sdpa")
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=128, **common)
    if family == "llama":
        return LlamaConfig(
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=128,
            **common,
        )
    return Qwen2Config(
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=3,
        max_position_embeddings=128,
        **common,
    )


def _build(family: str, attn: str = "sdpa", seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = _config(family)
    cfg._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()
    if family == "qwen2":  # Qwen2 initialises biases to zero: give them values so they matter
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    return model


FAMILIES = ["gpt2", "llama", "qwen2"]


def _ids(vocab: int, t: int = 13, b: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_qk_reproduce_eager_probabilities(family):
    sdpa_model = _build(family)
    eager_model = _build(family, attn="eager")
    eager_model.load_state_dict(sdpa_model.state_dict())
    lm = wrap_model(sdpa_model, None, name=family)
    ids = _ids(sdpa_model.config.vocab_size)
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    with torch.no_grad():
        eager = eager_model(ids, output_attentions=True).attentions
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in range(lm.arch.n_layers):
        q, k = cap["q", layer].double(), cap["k", layer].double()
        k = k.repeat_interleave(lm.arch.group, dim=1)
        scale = lm.hf_model.get_submodule(lm.adapter.layout.layers)[layer].get_submodule(lm.adapter.layout.attn).scaling
        probs = (q @ k.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf")).softmax(-1)
        assert torch.allclose(probs, eager[layer].double(), atol=1e-5), (family, layer)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_stays_sdpa_and_never_calls_eager(family, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa_mod

    model = _build(family)
    lm = wrap_model(model, None, name=family)
    calls = []
    real = sdpa_mod.sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    monkeypatch.setitem(
        ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    with capture(lm, keep=("q",)) as cap:
        lm.forward(_ids(model.config.vocab_size))
    assert len(calls) == lm.arch.n_layers  # every layer went through SDPA
    assert cap["q", 0].shape[1] == lm.arch.n_heads


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_leave_no_trace_after_exit_and_after_error(family):
    model = _build(family)
    reference = _build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        expected = reference(ids).logits
    with intervene(lm, [ablate_head(0, 1), scale_head(1, 0, 3.0)]), capture(lm):
        changed = lm.forward(ids)
    assert not torch.allclose(changed, expected)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(lm, [uniform_attention(1, 1)]), capture(lm):
            lm.forward(ids)
            raise RuntimeError("boom")
    assert torch.equal(lm.forward(ids), expected)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        state = getattr(module, "_interp", None)
        if state is not None:
            assert all(not v for v in state.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_ablating_every_head_equals_removing_attention_output(family):
    model = _build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids(model.config.vocab_size)
    layer = 1
    with intervene(lm, [ablate_head(layer, h) for h in range(lm.arch.n_heads)]):
        ablated = lm.forward(ids)
    # Independent route: replace the attention block's output by its bias alone (o_proj(0)).
    attn = lm.hf_model.get_submodule(lm.adapter.layout.layers)[layer].get_submodule(lm.adapter.layout.attn)
    proj = getattr(attn, lm.adapter.layout.o_proj)
    bias = proj.bias if proj.bias is not None else torch.zeros(lm.arch.d_model)

    def hook(mod, args, out):
        return (torch.zeros_like(out[0]) + bias, *out[1:])

    handle = attn.register_forward_hook(hook)
    try:
        with torch.no_grad():
            removed = model(ids).logits
    finally:
        handle.remove()
    assert torch.allclose(ablated, removed, atol=1e-5)


def test_uniform_attention_averages_visible_values(tiny_lm):
    lm = tiny_lm
    ids = _ids(97, t=9)
    with intervene(lm, [uniform_attention(2, 1)]), capture(lm, layers=[2], keep=("v", "z")) as cap:
        lm.forward(ids)
    kv = lm.arch.kv_map[1]
    v = cap["v", 2][:, kv]
    expected = v.cumsum(1) / torch.arange(1, 10).view(1, -1, 1)
    assert torch.allclose(cap["z", 2][:, 1], expected, atol=1e-5)


def test_patch_head_copies_another_runs_output(tiny_lm):
    lm = tiny_lm
    clean, corrupt = _ids(97, seed=3), _ids(97, seed=4)
    with capture(lm, layers=[1], keep=("z",)) as clean_cap:
        lm.forward(clean)
    with intervene(lm, [patch_head(1, 2, clean_cap["z", 1][:, 2])]), capture(lm, layers=[1], keep=("z",)) as cap:
        lm.forward(corrupt)
    assert torch.equal(cap["z", 1][:, 2], clean_cap["z", 1][:, 2])
    with capture(lm, layers=[1], keep=("z",)) as plain:
        lm.forward(corrupt)
    others = [h for h in range(lm.arch.n_heads) if h != 2]
    assert torch.allclose(cap["z", 1][:, others], plain["z", 1][:, others])


def test_scale_head_scales_output(tiny_lm):
    lm = tiny_lm
    ids = _ids(97)
    with capture(lm, layers=[0], keep=("z",)) as base:
        lm.forward(ids)
    with intervene(lm, [scale_head(0, 3, 2.5)]), capture(lm, layers=[0], keep=("z",)) as cap:
        lm.forward(ids)
    assert torch.allclose(cap["z", 0][:, 3], 2.5 * base["z", 0][:, 3])


@pytest.mark.parametrize("per_row", [False, True])
def test_key_bias_matches_float64_softmax(tiny_lm, per_row):
    lm = tiny_lm
    ids = _ids(97, t=11)
    b, t = ids.shape
    keys = torch.zeros(b, t, dtype=torch.bool)
    keys[:, 0] = True
    keys[:, 4] = True
    bias = torch.randn(b, t) if per_row else 0.9
    with intervene(lm, [key_bias(1, 2, keys, bias)]), capture(lm, layers=[1], keep=("q", "k", "v", "z")) as cap:
        lm.forward(ids)
    kv = lm.arch.kv_map[2]
    q, k, v = (cap[s, 1][:, h].double() for s, h in (("q", 2), ("k", kv), ("v", kv)))
    s = q @ k.transpose(-1, -2) * lm.arch.scale
    add = torch.as_tensor(bias, dtype=torch.float64).expand(b, t)[:, :, None] * keys[:, None, :].double()
    s = (s + add).masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    expected = s.softmax(-1) @ v
    assert torch.allclose(cap["z", 1][:, 2].double(), expected, atol=1e-5)


def test_streaming_callback_gets_every_layer(tiny_lm):
    lm = tiny_lm
    seen = []
    with capture(lm, keep=(), on_layer=lambda layer, q, k, v: seen.append((layer, q.shape, k.shape))):
        lm.forward(_ids(97))
    assert [s[0] for s in seen] == list(range(lm.arch.n_layers))
    assert all(s[1][1] == lm.arch.n_heads and s[2][1] == lm.arch.n_kv_heads for s in seen)


def test_bad_layer_head_site_and_nan(tiny_lm):
    lm = tiny_lm
    with pytest.raises(InterpError, match=r"layer 7 out of range: the model has 3 layers \(0-2\)"):
        with capture(lm, layers=[7]):
            pass
    with pytest.raises(InterpError, match="head 99 out of range"):
        with intervene(lm, [ablate_head(0, 99)]):
            pass
    with pytest.raises(InterpError, match="unknown site"):
        with capture(lm, keep=("pattern",)):
            pass
    nan_edit = Edit("resid_pre", 1, lambda x: x * float("nan"))
    with pytest.raises(InterpError, match="NaN or inf"):
        with intervene(lm, [nan_edit]), capture(lm, layers=[1], keep=("q",)):
            lm.forward(_ids(97))


def test_prompt_longer_than_context_and_empty(tiny_lm):
    lm = tiny_lm
    with pytest.raises(InterpError, match="context of 256 tokens"):
        lm.forward(torch.zeros(1, 300, dtype=torch.long))
    with pytest.raises(InterpError, match="empty"):
        lm.forward(torch.zeros(1, 0, dtype=torch.long))


def test_family_without_adapter_names_the_supported_ones():
    from interp.hooks import adapter_for

    with pytest.raises(InterpError, match="no hook adapter for model type 'bert'.*llama"):
        adapter_for("bert")


@pytest.mark.parametrize("family", FAMILIES)
def test_start_at_layer_equals_the_full_pass_and_skips_the_layers_below(family):
    from interp.hooks import start_at_layer

    model = _build(family)
    lm = wrap_model(model, None, name=family)
    ids = _ids(model.config.vocab_size)
    with capture(lm, keep=("resid_pre",)) as cap:
        lm.forward(ids)
    edits = [ablate_head(2, 1), scale_head(2, 0, 2.0)]
    with intervene(lm, edits):
        want = lm.forward(ids)
    ran = []  # attention modules that computed (those of skipped layers must not)
    blocks = lm.adapter.layers(lm)
    hooks = [lm.adapter.attention(lm, i).register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i in range(3)]
    try:
        with start_at_layer(lm, 2, cap["resid_pre", 2]), intervene(lm, edits):
            got = lm.forward(ids)
    finally:
        for h in hooks:
            h.remove()
    assert torch.allclose(got, want, atol=1e-6)
    assert ran == [2]
    assert torch.equal(lm.forward(ids), model(ids).logits)  # removed on exit: a plain pass again
    assert not any("forward" in b.__dict__ for b in blocks)

"""`run_with_cache` and the `Cache` it returns, on tiny random models (GQA Llama, windowed and
soft-capped Gemma 3, GPT-2 without RoPE, the TransformerLens bridge): no downloads.

The pattern is checked against the attention weights the model's own eager attention returns
(``output_attentions=True``), an independent computation; statistics against the unpadded runs.
"""

from __future__ import annotations

import pytest
import torch
from families import WINDOW, build, tokenizer

from interp.errors import InterpError
from interp.hooks import Cache, Capture, capture, run_with_cache
from interp.models import load_model, wrap_model

TOL = 1e-5


def _ids(vocab: int = 101, b: int = 2, t: int = 17, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def _left_pad(ids: torch.Tensor, pads: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones_like(ids)
    for row, n in enumerate(pads):
        mask[row, :n] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _eager_attentions(family: str, ids, mask):
    model = build(family, attn="eager")
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_pattern_is_the_models_own_softmax_with_gqa_window_and_left_padding(family):
    lm = wrap_model(build(family), None, name=family)  # the family's default attention (SDPA / eager)
    ids, mask = _left_pad(_ids(t=17), [0, 6])  # 17 > WINDOW: the windowed layers cut keys off
    assert 17 > WINDOW and lm.arch.n_kv_heads < lm.arch.n_heads
    logits, cache = lm.run_with_cache(ids, attention_mask=mask)
    want = _eager_attentions(family, ids, mask)
    assert logits is not None and logits.shape == (2, 17, 101)
    real = mask.bool()
    for layer in range(lm.arch.n_layers):
        every = cache.pattern(layer)
        assert every.shape == (2, 6, 17, 17)
        for head in (0, 3, 5):
            one = cache.pattern(layer, head)
            assert torch.equal(one, every[:, head])
            for b in range(2):
                got, ref = one[b][real[b]][:, real[b]], want[layer][b, head][real[b]][:, real[b]]
                torch.testing.assert_close(got, ref, atol=TOL, rtol=0)
                assert float(one[b][:, ~real[b]].abs().sum()) == 0.0  # padded keys get nothing
        assert torch.equal(cache[f"blocks.{layer}.attn.hook_pattern"], every)
    windowed = [layer for layer in range(3) if lm.attention_kwargs(layer)["sliding_window"]]
    if family == "gemma3_text":  # the window is really applied: no mass WINDOW or more back
        assert windowed == [0, 2]
        a = cache.pattern(0, 1)[0]
        i, j = torch.meshgrid(torch.arange(17), torch.arange(17), indexing="ij")
        assert float(a[(i - j) >= WINDOW].abs().max()) == 0.0


def test_stats_of_a_left_padded_batch_equal_the_unpadded_runs_row_by_row():
    lm = wrap_model(build("gemma3_text"), None, name="gemma3")
    rows = [_ids(b=1, t=15, seed=2)[0], _ids(b=1, t=9, seed=3)[0]]
    ids = torch.zeros(2, 15, dtype=torch.long)
    mask = torch.zeros(2, 15, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, 15 - len(r) :], mask[b, 15 - len(r) :] = r, 1
    _, cache = lm.run_with_cache(ids, attention_mask=mask)
    for b, r in enumerate(rows):
        _, alone = lm.run_with_cache(r)
        n = len(r)
        for layer in range(3):
            got, want = cache.stats(layer, backend="torch"), alone.stats(layer, backend="torch")
            for name in ("entropy", "sink", "dist", "top1p", "lse"):
                torch.testing.assert_close(getattr(got, name)[b, :, -n:], getattr(want, name)[0], atol=1e-4, rtol=1e-4)
    # without the mask the padded row's statistics are wrong: the check above could fail
    _, unmasked = lm.run_with_cache(ids)
    _, alone = lm.run_with_cache(rows[1])
    assert (unmasked.stats(1).entropy[1, :, -9:] - alone.stats(1).entropy[0]).abs().max() > 1e-2


def test_tl_names_answer_in_tl_layout_and_tuple_keys_in_ours():
    lm = wrap_model(build("llama"), None, name="llama")
    _, cache = run_with_cache(lm, _ids(), sites=("q", "k", "v", "z", "resid_pre", "mlp_out"))
    assert isinstance(cache, Cache) and Capture is Cache
    z = cache["z", 1]  # [batch, head, pos, d_head]
    assert z.shape == (2, 6, 17, 8)
    assert torch.equal(cache["blocks.1.attn.hook_z"], z.transpose(1, 2))  # [batch, pos, head, d_head]
    assert torch.equal(cache["blocks.1.attn.hook_z"][0, :, 4], z[0, 4])  # TL's [0, :, head] is head 4
    assert torch.equal(cache["blocks.1.attn.hook_rot_q"], cache["q", 1].transpose(1, 2))
    assert cache["blocks.2.attn.hook_v"].shape == (2, 17, 2, 8)  # un-repeated kv heads, as TL's hook_v
    assert torch.equal(cache["blocks.0.hook_resid_pre"], cache["resid_pre", 0])
    assert torch.equal(cache["blocks.0.hook_mlp_out"], cache["mlp_out", 0])
    assert "blocks.1.attn.hook_pattern" in cache and "blocks.1.hook_resid_post" not in cache
    assert cache.keys()[:6] == [
        "blocks.0.attn.hook_rot_q",
        "blocks.0.attn.hook_rot_k",
        "blocks.0.attn.hook_v",
        "blocks.0.attn.hook_z",
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_mlp_out",
    ]
    assert cache.keys()[6] == "blocks.0.attn.hook_pattern" and all(torch.is_tensor(cache[n]) for n in cache.keys())
    with pytest.raises(InterpError, match="before RoPE.*hook_rot_q"):
        cache["blocks.1.attn.hook_q"]  # TL's hook_q is pre-RoPE: never silently the rotated q
    with pytest.raises(InterpError, match="unknown cache key"):
        cache["blocks.1.attn.hook_result"]


def test_gpt2_without_rope_answers_hook_q():
    lm = wrap_model(build("gpt2"), None, name="gpt2")
    _, cache = lm.run_with_cache(_ids())
    assert torch.equal(cache["blocks.0.attn.hook_q"], cache["q", 0].transpose(1, 2))


@pytest.mark.parametrize("backend", ["hf", "tl"])
def test_stop_at_layer_ends_the_pass_for_every_site(backend, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build("llama")
    if backend == "tl":
        model.save_pretrained(tmp_path)
        tokenizer().save_pretrained(tmp_path)
        model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        lm = wrap_model(
            model, AutoTokenizer.from_pretrained(tmp_path), name="llama", backend="tl", source=str(tmp_path)
        )
    else:
        lm = wrap_model(model, None, name="llama")
    ids = _ids()
    sites = ("q", "k", "v", "z", "resid_pre", "resid_post", "attn_out", "mlp_out")
    full_logits, full = lm.run_with_cache(ids, sites=sites)
    ran = []
    handle = lm.hf_model.model.norm.register_forward_hook(lambda *a: ran.append(1))  # the final norm
    try:
        logits, early = lm.run_with_cache(ids, sites=sites, stop_at_layer=2)
        with capture(lm, keep=sites, stop_at_layer=1) as cap:
            lm.forward(ids)
            pytest.fail("the statements after a stopped pass are skipped")
    finally:
        handle.remove()
    assert logits is None and full_logits is not None and early.stopped and cap.stopped
    assert ran == [] and early.layers == [0, 1] and cap.layers == [0]
    for site in sites:
        for layer in (0, 1):
            assert torch.equal(early[site, layer], full[site, layer]), (site, layer)
        assert torch.equal(cap[site, 0], full[site, 0])
    with pytest.raises(InterpError, match="layer 2 was not captured"):
        early["z", 2]
    with pytest.raises(InterpError, match=r"layer 3 out of range: the model has 3 layers"):
        early["z", 3]


def test_capture_remembers_the_forward_mask():
    lm = wrap_model(build("llama"), None, name="llama")
    ids, mask = _left_pad(_ids(), [0, 5])
    _, cache = lm.run_with_cache(ids, attention_mask=mask)
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids, mask)
    assert torch.equal(cap.attention_mask, mask)
    assert torch.equal(cap.pattern(1, 2), cache.pattern(1, 2))
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    assert cap.attention_mask is None and not torch.equal(cap.pattern(1, 2), cache.pattern(1, 2))


def test_texts_are_encoded_and_left_padded_like_encode_batch(embedded_tokenizer_lm):
    lm = embedded_tokenizer_lm
    texts = ["the cat sat", "a much longer sentence about a cat that sat"]
    ids, mask = lm.encode_batch(texts)
    logits, cache = lm.run_with_cache(texts, layers=[0])
    assert torch.equal(cache.input_ids, ids) and torch.equal(cache.attention_mask, mask)
    assert logits.shape[:2] == ids.shape
    _, one = lm.run_with_cache(texts[0], layers=[0])
    assert torch.equal(one.input_ids, lm.encode(texts[0])) and one.attention_mask is None


@pytest.fixture
def embedded_tokenizer_lm():
    """A tiny random Llama with the embedded SmolLM2 tokenizer (strings in, no weights downloaded)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from interp.models import _embedded_weights_dir

    tok = AutoTokenizer.from_pretrained(_embedded_weights_dir())
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        pad_token_id=tok.pad_token_id,
    )
    return wrap_model(LlamaForCausalLM(cfg).eval(), tok, name="tiny")


BAD = {
    "head out of range": (lambda lm, c: c.pattern(1, 6), "head 6 out of range"),
    "layer out of range": (lambda lm, c: lm.run_with_cache(_ids(), layers=[3]), "layer 3 out of range"),
    "stop past the model": (
        lambda lm, c: lm.run_with_cache(_ids(), stop_at_layer=4),
        "stop_at_layer must be an int in 1..3",
    ),
    "stop below 1": (lambda lm, c: lm.run_with_cache(_ids(), stop_at_layer=0), "stop_at_layer must be an int in 1..3"),
    "layer past the stop": (
        lambda lm, c: lm.run_with_cache(_ids(), layers=[2], stop_at_layer=2),
        "layer 2 never runs with stop_at_layer=2",
    ),
    "pattern of a layer not captured": (
        lambda lm, c: c.pattern(2),
        r"pattern: layer 2 was not captured \(captured: \[0, 1\]\)",
    ),
    "site not captured": (lambda lm, c: c["mlp_out", 0], "site 'mlp_out' was not kept"),
    "pattern without q and k": (
        lambda lm, c: lm.run_with_cache(_ids(), sites=("z",))[1].pattern(0),
        "needs q and k of layer 0",
    ),
    "stats with a mask of its own": (
        lambda lm, c: c.stats(0, key_padding_mask=None),
        "applies the forward's own padding mask",
    ),
    "ids and mask disagree": (
        lambda lm, c: lm.run_with_cache(_ids(), attention_mask=torch.ones(2, 5, dtype=torch.long)),
        "attention_mask must be 0/1",
    ),
    "float ids": (lambda lm, c: lm.run_with_cache(torch.rand(2, 5)), "run_with_cache takes a string"),
    "ids past the vocabulary": (
        lambda lm, c: lm.run_with_cache(torch.tensor([[5, 500]])),
        "token ids must lie in 0..100",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_interp_error_line(case):
    lm = wrap_model(build("llama"), None, name="llama")
    _, cache = lm.run_with_cache(_ids(), layers=[0, 1])
    fn, match = BAD[case]
    with pytest.raises(InterpError, match=match) as err:
        fn(lm, cache)
    assert "\n" not in str(err.value)


def test_load_model_and_wrap_model_take_objects(tmp_path, monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build("llama").save_pretrained(tmp_path)
    tokenizer().save_pretrained(tmp_path)
    module = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    lm = load_model(module)  # was: OSError File name too long
    assert lm.hf_model is module and lm.backend == "hf" and lm.tokenizer is not None
    bridge = TransformerBridge.boot_transformers(
        str(tmp_path),
        hf_model=AutoModelForCausalLM.from_pretrained(tmp_path).eval(),
        tokenizer=AutoTokenizer.from_pretrained(tmp_path),
    )
    tl = wrap_model(bridge)  # was: AttributeError 'Tensor' object has no attribute 'logits'
    assert tl.model is bridge and tl.backend == "tl"
    ids = _ids(b=1)
    hf_logits, a = lm.run_with_cache(ids)
    tl_logits, b = tl.run_with_cache(ids)
    torch.testing.assert_close(tl_logits, hf_logits, atol=TOL, rtol=0)
    torch.testing.assert_close(b.pattern(1, 2), a.pattern(1, 2), atol=TOL, rtol=0)
    with pytest.raises(InterpError, match="backend='tl'"):
        wrap_model(bridge, backend="hf")
    with pytest.raises(InterpError, match="cannot wrap a Linear: pass a transformers causal LM"):
        wrap_model(torch.nn.Linear(2, 2))
    with pytest.raises(InterpError, match="cannot wrap a Linear"):
        load_model(torch.nn.Linear(2, 2))


def test_the_cache_reads_like_a_mapping_of_tl_names():
    """TransformerLens habits: len, iteration, items() and a repr that says what the cache holds
    (iterating used to reach __getitem__(0) and fail with 'cache keys are (site, layer)')."""
    lm = wrap_model(build("llama"), None, name="llama")
    ids, mask = _left_pad(_ids(), [0, 5])
    _, cache = lm.run_with_cache(ids, layers=[0, 2], sites=("q", "k", "z"), attention_mask=mask)
    names = ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k", "blocks.0.attn.hook_z"]
    names += ["blocks.0.attn.hook_pattern"] + [n.replace(".0.", ".2.") for n in names + ["blocks.0.attn.hook_pattern"]]
    assert list(cache) == names and len(cache) == 8
    items = dict(cache.items())
    assert list(items) == names and torch.equal(items["blocks.2.attn.hook_z"], cache["z", 2].transpose(1, 2))
    assert torch.equal(items["blocks.0.attn.hook_pattern"], cache.pattern(0))
    assert repr(cache) == "Cache(layers [0, 2], sites q, k, z: batch 2 x 17 positions, padded; 8 TL names)"


def test_run_with_cache_takes_one_layer_as_an_int_and_pattern_as_a_site():
    lm = wrap_model(build("llama"), None, name="llama")
    _, cache = lm.run_with_cache(_ids(), layers=1, sites=("pattern",))  # was: TypeError 'int' is not iterable
    assert cache.layers == [1] and cache.keep == ("q", "k")
    assert cache.pattern(1).shape == (2, 6, 17, 17)
    with pytest.raises(InterpError, match="layer 3 out of range"):
        lm.run_with_cache(_ids(), layers=3)


def test_names_filter_chooses_layers_and_sites_by_tl_names():
    """TransformerLens's names_filter (a name, a list of names or a predicate over names) picks what
    is captured; was: TypeError unexpected keyword argument 'names_filter'."""
    lm = wrap_model(build("llama"), None, name="llama")
    _, only = lm.run_with_cache(_ids(), names_filter=lambda name: name.endswith("hook_pattern"))
    assert only.layers == [0, 1, 2] and only.keep == ("q", "k")
    _, two = lm.run_with_cache(_ids(), names_filter=["blocks.2.attn.hook_z", "blocks.1.hook_resid_post"])
    assert two.layers == [1, 2] and set(two.keep) == {"z", "resid_post"}
    _, one = lm.run_with_cache(_ids(), names_filter="blocks.1.attn.hook_pattern")
    _, full = lm.run_with_cache(_ids())
    assert one.layers == [1] and torch.equal(one["blocks.1.attn.hook_pattern"], full.pattern(1))
    with pytest.raises(InterpError, match="names_filter matches no hook name"):
        lm.run_with_cache(_ids(), names_filter=lambda name: False)
    with pytest.raises(InterpError, match=r"unknown hook name\(s\) \['blocks.9.attn.hook_z'\] in names_filter"):
        lm.run_with_cache(_ids(), names_filter=["blocks.9.attn.hook_z"])
    with pytest.raises(InterpError, match="names_filter or layers/sites"):
        lm.run_with_cache(_ids(), layers=[1], names_filter="blocks.1.attn.hook_z")


def test_a_negative_layer_in_a_tuple_key_counts_from_the_last_layer():
    """As TransformerLens's cache["z", -1]; was 'layer -1 out of range'."""
    lm = wrap_model(build("llama"), None, name="llama")
    _, cache = lm.run_with_cache(_ids(), sites=("q", "k", "z"))
    assert torch.equal(cache["z", -1], cache["z", 2]) and torch.equal(cache["pattern", -3], cache.pattern(0))
    with pytest.raises(InterpError, match="layer -4 out of range: the model has 3 layers"):
        cache["z", -4]

"""The attention-pattern viewer against the model's own attention weights (tiny random Llama).

The reference is HF's eager attention with ``output_attentions`` (a test-only reference path):
the viewer, fed the captured post-RoPE q and k of one head, must reproduce it exactly, and its
block-pooled view must equal block means of the exact pattern.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import InterpError
from interp.hooks import capture
from interp.models import wrap_model
from interp.plots.attention import HeadPattern, attention_view, head_pattern, pattern_figure


def _eager_attentions(tiny_llama_factory, n_heads, n_kv, ids):
    """Reference attention weights [layer][batch, head, q, k] from HF eager attention."""
    model = tiny_llama_factory(n_heads, n_kv)
    model.config._attn_implementation = "eager"
    for layer in model.model.layers:
        layer.self_attn.config._attn_implementation = "eager"
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    return [a.double() for a in out.attentions]


@pytest.mark.parametrize("n_heads,n_kv", [(4, 4), (6, 2)], ids=["mha", "gqa"])
def test_exact_pattern_matches_model_attention(tiny_llama_factory, n_heads, n_kv):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 97, (1, 37), generator=g)
    ref = _eager_attentions(tiny_llama_factory, n_heads, n_kv, ids)
    lm = wrap_model(tiny_llama_factory(n_heads, n_kv), None, name="tiny")
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(ids)
    for layer in range(lm.arch.n_layers):
        for head in range(n_heads):
            q = cap["q", layer][0, head]
            k = cap["k", layer][0, lm.arch.kv_map[head]]
            pat = head_pattern(q, k, scale=lm.arch.scale, chunk_size=5)
            assert pat.exact and pat.values.shape == (37, 37)
            want = ref[layer][0, head].numpy()
            upper = np.triu(np.ones((37, 37), dtype=bool), 1)
            assert np.isnan(pat.values[upper]).all()  # keys after the query are blank, not zero
            np.testing.assert_allclose(pat.values[~upper], want[~upper], atol=2e-6)


def _block_reference(a: np.ndarray, visible: np.ndarray, block: int, pool: str) -> np.ndarray:
    nq, nk = a.shape
    out = np.full((-(-nq // block), -(-nk // block)), np.nan)
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            cells = a[r * block : (r + 1) * block, c * block : (c + 1) * block]
            vis = visible[r * block : (r + 1) * block, c * block : (c + 1) * block]
            if vis.any():
                out[r, c] = cells[vis].mean() if pool == "mean" else cells[vis].max()
    return out


@pytest.mark.parametrize("pool", ["mean", "max"])
@pytest.mark.parametrize("n_query", [70, 53])
def test_pooled_pattern_is_block_pool_of_exact(pool, n_query):
    g = torch.Generator().manual_seed(7)
    n_key = 70
    q = torch.randn(n_query, 16, generator=g) * 2
    k = torch.randn(n_key, 16, generator=g) * 2
    exact = head_pattern(q, k, scale=0.25)
    visible = ~np.isnan(exact.values)
    # end-aligned queries: row i sits at position n_key - n_query + i
    assert visible[0].sum() == n_key - n_query + 1
    pooled = head_pattern(q, k, scale=0.25, max_exact=32, blocks=8, pool=pool, chunk_size=6)
    assert not pooled.exact and pooled.block == 9 and pooled.pool == pool
    want = _block_reference(np.nan_to_num(exact.values), visible, pooled.block, pool)
    assert pooled.values.shape == want.shape
    assert np.array_equal(np.isnan(pooled.values), np.isnan(want))
    np.testing.assert_allclose(pooled.values, want, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_long_input_never_builds_a_full_matrix(monkeypatch):
    """Above max_exact every score block is [<= chunk_size, key_pos]; nothing [T, T] is made."""
    import interp.kernels.pattern as kernel_pattern

    shapes = []
    real = kernel_pattern.reference_probs

    def spy(problem, dtype=torch.float64):
        shapes.append((problem.query_pos, problem.key_pos))
        return real(problem, dtype)

    monkeypatch.setattr(kernel_pattern, "reference_probs", spy)  # where the viewer's A is computed
    t = 1500
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(t, 8, generator=g), torch.randn(t, 8, generator=g)
    pat = head_pattern(q, k, scale=0.35, chunk_size=128, blocks=100)
    assert max(rows for rows, _ in shapes) <= 128
    assert sum(rows for rows, _ in shapes) == t  # every row seen exactly once
    assert pat.values.shape == (100, 100) and pat.block == 15
    # each row of A sums to 1 over its visible keys: block means times visible counts add up to t
    diag = np.diag(pat.values)
    assert np.isfinite(diag).all() and (diag > 0).all()


def test_window_softcap_and_key_mask():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    win = head_pattern(q, k, scale=1.0, window=3)
    vis = ~np.isnan(win.values)
    i, j = np.indices(vis.shape)
    assert np.array_equal(vis, (j <= i) & (i - j < 3))
    np.testing.assert_allclose(np.nansum(win.values, axis=1), 1.0, atol=1e-6)
    capped = head_pattern(q * 50, k, scale=1.0, softcap=5.0)
    s = 5.0 * torch.tanh((q * 50).double() @ k.double().T / 5.0)
    want = torch.softmax(s.masked_fill(torch.triu(torch.ones(12, 12, dtype=torch.bool), 1), float("-inf")), -1)
    np.testing.assert_allclose(np.nan_to_num(capped.values), want.numpy(), atol=1e-5)
    assert want[1:].max() < 0.99  # the cap keeps rows from collapsing onto one key
    mask = np.ones(12, dtype=bool)
    mask[:4] = False  # left padding
    padded = head_pattern(q, k, scale=1.0, key_mask=mask)
    assert np.isnan(padded.values[:, :4]).all()
    np.testing.assert_allclose(np.nansum(padded.values[4:], axis=1), 1.0, atol=1e-6)


def test_bad_input_says_what_to_do():
    q = torch.randn(5, 8)
    with pytest.raises(InterpError, match="one head"):
        head_pattern(torch.randn(2, 3, 5, 8), torch.randn(5, 8), scale=1.0)
    with pytest.raises(InterpError, match="d_head"):
        head_pattern(q, torch.randn(5, 4), scale=1.0)
    with pytest.raises(InterpError, match="outnumber"):
        head_pattern(torch.randn(6, 8), torch.randn(5, 8), scale=1.0)
    with pytest.raises(InterpError, match="pool"):
        head_pattern(q, q, scale=1.0, pool="median")
    with pytest.raises(InterpError, match="one per key"):
        pattern_figure(head_pattern(q, q, scale=1.0), ["a"] * 4)


def test_figure_hover_names_tokens():
    g = torch.Generator().manual_seed(2)
    tokens = ["<s>", " the", " cat", "\n", " <b>", " sat"]
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    fig = attention_view(q, k, tokens, scale=0.3, layer=4, head=1)
    trace = fig.data[0]
    assert trace.type == "heatmap"
    assert list(trace.y)[3] == "3 '\\n'" and list(trace.x)[2] == "2 ' cat'"
    assert "&lt;b&gt;" in list(trace.x)[4]  # tag-like tokens are escaped for plotly's hover HTML
    assert "query %{y}" in trace.hovertemplate and "key %{x}" in trace.hovertemplate
    assert "layer 4 head 1" in fig.layout.title.text and "exact" in fig.layout.title.text
    pooled = head_pattern(torch.randn(40, 8), torch.randn(40, 8), scale=0.3, max_exact=10, blocks=4)
    fig2 = pattern_figure(pooled, [f"t{i}" for i in range(40)])
    assert list(fig2.data[0].x)[1].startswith("10-19 't10'")
    assert "mean over 10x10-token blocks" in fig2.layout.title.text


def test_pattern_dataclass_spans():
    pat = HeadPattern(values=np.zeros((3, 4)), block=5, n_query=13, n_key=18, pool="mean")
    assert pat.query_offset == 5
    assert pat.row_span(2) == (15, 18) and pat.col_span(3) == (15, 18)

"""Value-weighted statistics (`attention_stats(..., key_weight=)`): w_first, w_sink, w_self_mass,
w_recent, w_distant, w_recv against an independent float64 computation written here.

The check builds the dense float64 attention from q and k in this file (not through the
reference backend), multiplies it by the key weights, a_ij w_j (Kobayashi et al. 2020), and
takes each share by hand. Every backend is also compared with the reference on random
problems in test_kernels.py (the weighted statistics are rows of the table, so FLOAT_STATS
holds them), the Triton kernel under the interpreter there too.
"""

from __future__ import annotations

import pytest
import torch

from interp.kernels import attention_stats

WEIGHTED = ("w_first", "w_sink", "w_self_mass", "w_recent", "w_distant", "w_recv")


def _dense_shares(q, k, w, *, scale, window, sinks, pad, sink_tokens, windows, causal=True):
    """The weighted shares of every row, from the dense float64 softmax built here.

    Returns:
        dict name -> [batch, head, query_pos(, n_windows)] rows and w_recv [batch, head, key_pos].
    """
    q, k, w = q.double(), k.double(), w.double()
    batch, heads, n_q, _ = q.shape
    n_k, group = k.shape[2], heads // k.shape[1]
    k_h = k[:, torch.arange(heads) // group]  # head h reads kv head h // group
    w_h = w[:, torch.arange(heads) // group] if w.shape[1] != heads else w
    s = torch.einsum("bhid,bhjd->bhij", q, k_h) * scale
    a_pos = torch.arange(n_k - n_q, n_k)[:, None]  # key index of each query row
    j = torch.arange(n_k)[None, :]
    real = j >= torch.tensor(pad)[:, None, None]  # [batch, 1, key_pos] left padding
    vis = real & (j > a_pos - window) if window else real.expand(-1, n_q, -1)
    if causal:
        vis = vis & (j <= a_pos)
    logits = s.masked_fill(~vis[:, None], float("-inf"))
    logits = torch.cat([logits, sinks.double().view(1, heads, 1, 1).expand(batch, -1, n_q, 1)], -1)
    a = torch.softmax(logits, -1)[..., :-1]  # the sink logit is not a key: its column is dropped
    query_real = (a_pos[:, 0] >= torch.tensor(pad)[:, None])[:, None, :, None]  # [batch, 1, query_pos, 1]
    a = a * query_real
    u = a * w_h[:, :, None, :]  # a_ij w_j
    total = u.sum(-1)
    first = torch.tensor(pad)[:, None, None, None]
    lag = a_pos - j  # a_i - j
    sink_keys = (j >= first) & (j < first + sink_tokens)
    out = {
        "w_first": (u * (j == first)).sum(-1) / total,
        "w_sink": (u * sink_keys).sum(-1) / total,
        "w_self_mass": (u * (lag == 0)).sum(-1) / total,
        "w_recent": torch.stack([(u * ((lag >= 0) & (lag < x))).sum(-1) / total for x in windows], -1),
        "w_distant": torch.stack([(u * ((lag >= x) & ~sink_keys)).sum(-1) / total for x in windows], -1),
    }
    recv = (u / total[..., None]).nan_to_num(0.0).sum(-2)  # rows without weighted mass add nothing
    out["w_recv"] = recv.masked_fill(~real[:, :, 0, :] if real.ndim == 4 else ~real, float("nan"))
    return out


def _problem(seed: int, kv_weights: bool):
    """Decode rows (40 queries over 55 keys), GQA 3, left padding, zero weights on some keys."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 6, 40, 16, generator=gen) * 2, torch.randn(2, 2, 55, 16, generator=gen)
    w = torch.rand(2, 2 if kv_weights else 6, 55, generator=gen) * 3
    w = w * (torch.rand(w.shape, generator=gen) > 0.2)  # some value vectors of norm 0
    sinks = torch.randn(6, generator=gen) * 2
    return q, k, w, sinks


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("kv_weights", [True, False], ids=["per-kv-head", "per-head"])
def test_weighted_shares_equal_the_dense_float64_computation(backend: str, kv_weights: bool) -> None:
    q, k, w, sinks = _problem(3, kv_weights)
    pad, windows = [0, 20], (4, 25)  # batch 1: keys 0-19 padding, so query rows 0-4 (keys 15-19) too
    kw = dict(scale=0.25, sliding_window=20, sink_tokens=3, recent_windows=windows, sink_logits=sinks)
    mask = torch.arange(55)[None] >= torch.tensor(pad)[:, None]
    got = attention_stats(q, k, key_weight=w, key_padding_mask=mask, backend=backend, chunk_size=7, **kw)
    want = _dense_shares(q, k, w, scale=0.25, window=20, sinks=sinks, pad=pad, sink_tokens=3, windows=windows)
    tol = 1e-10 if backend == "reference" else 2e-5
    for name in WEIGHTED:
        g, r = getattr(got, name).double(), want[name]
        assert torch.equal(g.isnan(), r.isnan()), f"{name}: NaN pattern differs"
        torch.testing.assert_close(g, r, rtol=tol, atol=tol, equal_nan=True, msg=name)
    assert got.w_first[1, :, :5].isnan().all()  # padded query rows
    assert (got.w_recv.isnan() == ~mask[:, None, :]).all()  # padded keys, and only those


def test_rows_of_a_query_subset_equal_the_full_rows() -> None:
    """query_rows picks rows of the full result; the column sum still runs over every row."""
    q, k, w, sinks = _problem(4, kv_weights=True)
    kw = dict(scale=0.25, sink_tokens=2, recent_windows=(5,), sink_logits=sinks, key_weight=w, backend="torch")
    full = attention_stats(q, k, **kw)
    rows = torch.tensor([39, 0, 17, 17])
    sub = attention_stats(q, k, query_rows=rows, **kw)
    for name in ("w_first", "w_sink", "w_self_mass", "w_recent", "w_distant"):
        torch.testing.assert_close(getattr(sub, name), getattr(full, name)[:, :, rows], equal_nan=True, msg=name)
    torch.testing.assert_close(sub.w_recv, full.w_recv, equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_constant_weights_give_the_plain_masses_over_the_row_mass(backend: str) -> None:
    """w_j = c: each share is the plain mass over sum_j A_ij (1 without a sink logit, below 1 with one)."""
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 4, 30, 8, generator=gen) * 2, torch.randn(1, 2, 30, 8, generator=gen)
    for sinks in (None, torch.tensor([0.0, 2.0, -1.0, 4.0])):
        kw = dict(scale=0.4, sink_tokens=2, recent_windows=(3, 40), sink_logits=sinks, backend=backend)
        plain = attention_stats(q, k, **kw)
        weighted = attention_stats(q, k, key_weight=torch.full((1, 2, 30), 2.5), **kw)
        mass = plain.recent[..., -1] + plain.distant[..., -1]  # w = 40 > T: every key is recent; distant 0
        for name in ("first", "sink", "self_mass"):
            torch.testing.assert_close(getattr(weighted, f"w_{name}"), getattr(plain, name) / mass, msg=name)
        torch.testing.assert_close(weighted.w_recent, plain.recent / mass[..., None])
        torch.testing.assert_close(weighted.w_distant, plain.distant / mass[..., None])
        assert torch.allclose(weighted.w_recent[..., -1].double(), torch.ones(1, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(weighted.w_recv.sum(-1).double(), torch.full((1, 4), 30.0, dtype=torch.float64))


def test_a_first_token_of_value_norm_zero_is_a_no_op_sink() -> None:
    """The first token takes most of the attention but carries no value: its weighted share is 0."""
    gen = torch.Generator().manual_seed(6)
    u = torch.randn(8, generator=gen)
    q, k = u + 0.3 * torch.randn(1, 2, 20, 8, generator=gen), torch.randn(1, 1, 20, 8, generator=gen)
    k[:, :, 0] = u * 4  # every query attends mostly to key 0
    w = torch.rand(1, 1, 20, generator=gen) + 0.5
    w[..., 0] = 0.0
    st = attention_stats(q, k, scale=0.5, key_weight=w, backend="torch")
    assert (st.first[0] > 0.5).all()  # a sink by its attention mass
    assert (st.w_first[0, :, 1:] == 0).all() and (st.w_recv[..., 0] == 0).all()
    assert st.w_first[0, :, 0].isnan().all()  # row 0 sees only key 0, of weight 0: no share is defined
    assert torch.allclose(st.w_recv[0, :, 1:].sum(-1), torch.full((2,), 19.0))  # each later row gives 1


def test_kv_head_weights_broadcast_to_their_query_heads() -> None:
    """A [batch, kv_head, key_pos] weight is the same as repeating it over the group (GQA 3)."""
    q, k, w, sinks = _problem(7, kv_weights=True)
    kw = dict(scale=0.25, recent_windows=(6,), sink_logits=sinks, backend="torch")
    by_kv = attention_stats(q, k, key_weight=w, **kw)
    by_head = attention_stats(q, k, key_weight=w.repeat_interleave(3, dim=1), **kw)
    for name in WEIGHTED:
        assert torch.equal(getattr(by_kv, name).nan_to_num(-1), getattr(by_head, name).nan_to_num(-1)), name
    assert attention_stats(q, k, **kw).w_first is None  # no weights: no weighted statistics


def test_weighted_columns_in_the_dataframe() -> None:
    q, k, w, _ = _problem(8, kv_weights=True)
    st = attention_stats(q, k, scale=0.25, key_weight=w, recent_windows=(6,), backend="torch")
    rows, cols = st.to_dataframe(), st.to_dataframe("columns")
    assert {"w_first", "w_sink", "w_self_mass", "w_recent_6", "w_distant_6"} <= set(rows.columns)
    assert "w_recv" in cols.columns and len(cols) == 2 * 6 * 55

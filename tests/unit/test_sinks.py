"""Sink detection: pure functions on synthetic statistics with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typecheck import unchecked_new

from interp.analyses.sinks import (
    TOKEN_TYPES,
    SinkConfig,
    combine,
    first_token_mass,
    hidden_sinks,
    noop_sinks,
    reduce_layer,
    sink_members,
    sink_rate,
    token_type,
)
from interp.datasets.texts import default_texts, read_texts, split_texts
from interp.errors import InterpError
from interp.kernels import attention_stats


def test_first_token_mass_skips_the_sink_rows_and_nan():
    sink = torch.tensor([[1.0, 0.5, 0.25, float("nan")], [1.0, 1.0, 0.0, 0.2]])
    out = first_token_mass(sink, sink_tokens=1)
    assert out.tolist() == pytest.approx([0.375, 0.4])
    out2 = first_token_mass(sink, sink_tokens=2)
    assert out2.tolist() == pytest.approx([0.25, 0.1])


def test_sink_rate_is_a_percentage_over_all_entries():
    alpha = np.array([[0.31, 0.30, 0.9], [0.0, 0.5, 0.1]])
    assert sink_rate(alpha, 0.3) == pytest.approx(100 * 3 / 6)
    assert sink_rate(torch.tensor(alpha), 0.6) == pytest.approx(100 / 6)
    with pytest.raises(InterpError):
        sink_rate(np.array([]), 0.3)


def test_sink_members_first_hit_is_not_hidden():
    rm = torch.tensor(
        [
            [0.5, 0.05, 0.2, 0.15, 0.3],  # S = {0, 2, 3, 4}; hidden {2, 3, 4}
            [0.05, 0.2, 0.01, 0.3, 0.02],  # first hit at 1 (not 0): hidden {3}
            [float("nan"), 0.4, 0.01, 0.09, 0.11],  # padded key 0 never in S
        ]
    )
    member, hidden = sink_members(rm, tau=0.1, min_queries=1)
    assert member.tolist() == [
        [True, False, True, True, True],
        [False, True, False, True, False],
        [False, True, False, False, True],
    ]
    assert hidden.tolist() == [
        [False, False, True, True, True],
        [False, False, False, True, False],
        [False, False, False, False, True],
    ]
    # keys seen by fewer than 2 queries (the last one) are not candidates
    member2, hidden2 = sink_members(rm, tau=0.1, min_queries=2)
    assert member2[:, -1].tolist() == [False, False, False]
    assert hidden2[0].tolist() == [False, False, True, True, False]
    assert torch.equal(hidden_sinks(rm, 0.1, 1), hidden)


def test_sink_members_threshold_is_strict():
    member, _ = sink_members(torch.tensor([0.1, 0.1000001]), tau=0.1)
    assert member.tolist() == [False, True]


@pytest.mark.parametrize(
    "tok,special,expected",
    [
        ("<|im_start|>", True, "special"),
        ("\n", False, "newline"),
        ("\n\n   ", False, "newline"),
        ("   ", False, "whitespace"),
        (",", False, "punctuation"),
        (" .)", False, "punctuation"),
        ("==", False, "punctuation"),
        (" 42", False, "number"),
        (" The", False, "stopword"),
        (" of", False, "stopword"),
        (" parser", False, "other"),
        ("x1", False, "other"),
    ],
)
def test_token_type(tok, special, expected):
    assert token_type(tok, special) == expected
    assert expected in TOKEN_TYPES


def test_split_and_read_texts(tmp_path):
    assert split_texts("a\nb\n---\n\nc\n---\n   \n---\n") == ["a\nb", "c"]
    assert split_texts("one text\n\nwith --- inside") == ["one text\n\nwith --- inside"]
    f = tmp_path / "t.txt"
    f.write_text("first\n---\nsecond\n", encoding="utf-8")
    assert read_texts(f) == ("first", "second")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n---\n  \n", encoding="utf-8")
    with pytest.raises(InterpError, match="empty"):
        read_texts(empty)
    with pytest.raises(InterpError, match="not found"):
        read_texts(tmp_path / "missing.txt")


def test_shipped_texts_are_many_and_long():
    texts = default_texts()
    assert len(texts) >= 20
    assert all(len(t) > 1000 for t in texts)  # ~400 tokens each: the default 256-token window fits
    assert sum(len(t) for t in texts) > 8192 * 3  # enough for one packed 8k window


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": 1.0}, "eps"),
        ({"tau": -0.1}, "tau"),
        ({"length": 1}, "length"),
        ({"min_queries": 0}, "min_queries"),
        ({"sink_tokens": 0}, "sink_tokens"),
        ({"max_texts": 0}, "max_texts"),
        ({"texts": "one text, not a tuple"}, "sequence of strings"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InterpError, match=match):
        unchecked_new(SinkConfig, **kwargs)  # what a user's process (no test-time type checker) sees


def test_kernel_first_token_mass_matches_float64_and_alpha0_identity():
    """first-token mass from the kernel's row stat equals a materialised float64 computation,
    and alpha_0 (column stat) = (1 + (T - 1) * first_token_mass) / T."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 24, 8, generator=g) * 2
    k = torch.randn(1, 2, 24, 8, generator=g) * 2
    scale = 8**-0.5
    st = attention_stats(q, k, scale=scale, backend="torch")
    ftm = first_token_mass(st.sink[0], 1)
    s = (q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2))[0] * scale
    s = s.masked_fill(torch.ones(24, 24, dtype=torch.bool).triu(1), float("-inf"))
    a = torch.softmax(s, -1)
    expected = a[:, 1:, 0].mean(-1)
    assert torch.allclose(ftm, expected, atol=1e-5)
    alpha0 = st.recv_mean[0, :, 0].double()
    assert torch.allclose(alpha0, (1 + 23 * ftm) / 24, atol=1e-5)


def _synthetic_result():
    # 2 texts x 5 tokens, 2 layers (3 and 7) x 2 heads
    tokens = [
        (["A", " the", ",", "\n", " cat"], [True, False, False, False, False]),
        (["B", " x", ".", " of", "\n"], [False, False, False, False, False]),
    ]
    rec0 = {
        "first_token_mass": [[0.9, 0.1], [0.5, 0.2]],
        "alpha0": [[0.92, 0.28], [0.6, 0.36]],
        "position_count": [3, 0, 1, 0, 0],
        "hits": [[3, 0, 0, 0.92, False], [3, 0, 2, 0.2, True], [7, 1, 3, 0.15, True], [7, 1, 0, 0.36, False]],
    }
    rec1 = {
        "first_token_mass": [[0.8, 0.0], [0.4, 0.3]],
        "alpha0": [[0.85, 0.05], [0.5, 0.2]],
        "position_count": [3, 1, 0, 0, 0],
        "hits": [[3, 0, 0, 0.85, False], [3, 0, 2, 0.3, True], [3, 1, 4, 0.2, True]],
    }
    cfg = SinkConfig(texts=("a", "b"), length=5)
    return combine("toy", cfg, [3, 7], 2, tokens, [rec0, rec1])


def test_result_tables_from_synthetic_records():
    r = _synthetic_result()
    heads = r.to_dataframe()
    assert list(heads.columns[:5]) == ["layer", "head", "first_token_mass", "alpha0", "sink_rate_pct"]
    row = heads[(heads.layer == 3) & (heads["head"] == 0)].iloc[0]
    assert row.first_token_mass == pytest.approx(0.85)
    assert row.alpha0 == pytest.approx((0.92 + 0.85) / 2)
    assert row.sink_rate_pct == pytest.approx(100.0)
    assert row.n_hidden_sinks == 2 and row.hidden_mass == pytest.approx(0.25)
    assert heads[(heads.layer == 7) & (heads["head"] == 1)].iloc[0].sink_rate_pct == pytest.approx(50.0)
    # sink rate over all 8 (text, layer, head): alpha0 > 0.3 for 0.92, 0.6, 0.36, 0.85, 0.5
    assert r.sink_rate == pytest.approx(100 * 5 / 8)
    layers = r.layer_sink_rates()
    assert layers.sink_rate_pct.tolist() == pytest.approx([50.0, 75.0])
    sinks = r.sinks_dataframe()
    assert len(sinks) == 7 and sinks.hidden.sum() == 4
    assert sinks[sinks.hidden].token.tolist() == [",", "\n", ".", "\n"]
    assert r.position_sink_rate().tolist() == pytest.approx([100 * 6 / 8, 100 / 8, 100 / 8, 0, 0])


def test_token_type_table_shares_and_enrichment():
    r = _synthetic_result()
    t = r.token_type_table().set_index("token_type")
    assert t.loc["punctuation", "n_hidden"] == 2 and t.loc["newline", "n_hidden"] == 2
    assert t.share.sum() == pytest.approx(1.0)
    assert t.base_share.sum() == pytest.approx(1.0)
    # base: tokens after position 0 = 8: ' the', ',', '\n', ' cat', ' x', '.', ' of', '\n'
    assert t.loc["newline", "base_share"] == pytest.approx(2 / 8)
    assert t.loc["newline", "enrichment"] == pytest.approx(0.5 / 0.25)
    assert t.loc["newline", "n_positions"] == 2
    top = r.top_hidden_tokens()
    assert set(top.token[:2]) == {"\n", ","} and top.n_hidden.iloc[0] == 2
    s = r.summary()
    assert s["n_hidden_sinks"] == 4 and math.isclose(s["sink_rate_pct"], 62.5)


def test_sinks_figure_shows_the_measurements():
    from interp.plots.sinks import sinks_figure

    r = _synthetic_result()
    fig = sinks_figure(r)
    heat = fig.data[0]
    assert np.allclose(np.asarray(heat.z, float), r.first_token_mass.mean(0))
    bars = [tr for tr in fig.data if tr.type == "bar"]
    names = {tr.name for tr in bars}
    assert {"share of hidden sinks", "share of tokens"} <= names
    share = next(tr for tr in bars if tr.name == "share of hidden sinks")
    assert sum(share.y) == pytest.approx(1.0)


def test_reduce_layer_matches_dense_attention():
    """One layer's reduction from kernel statistics equals the same numbers read off a dense
    float64 attention matrix (first-token mass, alpha_0, counts above eps, sink members)."""
    g = torch.Generator().manual_seed(11)
    t, h, d = 24, 3, 8
    q, k = (
        torch.randn(1, h, t, d, generator=g, dtype=torch.float64),
        torch.randn(1, h, t, d, generator=g, dtype=torch.float64),
    )
    k[:, :, 0] *= 4.0  # a strong first key, so sinks exist
    st = attention_stats(q, k, scale=d**-0.5, columns=True, backend="reference")
    config = SinkConfig(length=t, eps=0.2, tau=0.1, min_queries=4)
    w = torch.rand(h, t, generator=g, dtype=torch.float64) + 0.1  # a key weight per head, e.g. ||W_O^h v_j||
    w[:, 0] = 0.05  # a small first value: the sink moves little
    a = torch.softmax(
        (q[0] @ k[0].transpose(-1, -2) * d**-0.5).masked_fill(
            ~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")
        ),
        -1,
    )
    aw = a * w[:, None, :]
    w_sink = aw[..., 0] / aw.sum(-1)  # the kernel's w_sink with key_weight w, computed densely
    rec = reduce_layer(st.sink[0], st.recv_mean[0], 7, config, w_sink=w_sink)
    ftm, a0, count, hits = rec["first_token_mass"], rec["alpha0"], rec["count"], rec["hits"]
    rm = a.sum(1) / torch.arange(t, 0, -1, dtype=torch.float64)
    assert np.allclose(ftm, a[:, 1:, 0].mean(-1).numpy(), atol=1e-9)
    assert np.allclose(rec["weighted_first_token_mass"], w_sink[:, 1:].mean(-1).numpy(), atol=1e-12)
    assert (rec["weighted_first_token_mass"] < ftm).all()  # the small first value shrinks the sink's share
    assert np.allclose(a0, rm[:, 0].numpy(), atol=1e-9)
    assert count.tolist() == (rm > 0.2).sum(0).tolist()
    expected = []
    for head in range(h):
        members = [j for j in range(t) if rm[head, j] > 0.1 and t - j >= 4]
        expected += [(7, head, j, j != members[0]) for j in members]
    assert [(l, hh, j, hid) for l, hh, j, _, hid in hits] == expected and expected


def test_noop_sinks_split_sinks_by_their_value_weighted_share():
    """A sink (alpha_0 > eps) is a no-op when its value-weighted first-token mass is under
    ratio x its attention mass; a non-sink is neither, whatever its values."""
    alpha0 = np.array([0.8, 0.8, 0.8, 0.1, np.nan])
    mass = np.array([0.7, 0.7, 0.7, 0.05, 0.5])
    weighted = np.array([0.1, 0.34, 0.36, 0.0, 0.1])
    sink, noop = noop_sinks(alpha0, mass, weighted, eps=0.3, ratio=0.5)
    assert sink.tolist() == [True, True, True, False, False]
    assert noop.tolist() == [True, True, False, False, False]  # 0.34 / 0.7 < 0.5 <= 0.36 / 0.7


def test_result_counts_noop_sinks_per_layer_kind_and_head():
    """noop_shares: percent of (text, layer, head) sinks that are no-ops, overall and per layer
    kind; heads.csv gets the value columns and each head's kind from its text means."""
    from interp.analyses.sinks import combine

    config = SinkConfig(length=64, eps=0.3, noop_ratio=0.5)
    # 2 texts, 2 layers (global, windowed), 2 heads.
    alpha0 = [[[0.9, 0.1], [0.6, 0.7]], [[0.9, 0.1], [0.6, 0.2]]]
    mass = [[[0.8, 0.05], [0.5, 0.6]], [[0.8, 0.05], [0.5, 0.1]]]
    weighted = [[[0.1, 0.05], [0.45, 0.1]], [[0.2, 0.05], [0.4, 0.1]]]
    records = [
        {"first_token_mass": m, "alpha0": a, "weighted_first_token_mass": w, "position_count": [0] * 64, "hits": []}
        for a, m, w in zip(alpha0, mass, weighted)
    ]
    tokens = [(["x"] * 64, [False] * 64)] * 2
    result = combine("m", config, [0, 1], 2, tokens, records, layer_windows=[None, 32])
    # sinks: text 0: (0,0) (1,0) (1,1); text 1: (0,0) (1,0). no-ops: (0,0) twice, (1,1) in text 0.
    shares = result.noop_shares()
    assert shares["all"] == pytest.approx(100 * 3 / 5)
    assert shares["global"] == pytest.approx(100.0) and shares["windowed W=32"] == pytest.approx(100 / 3)
    heads = result.to_dataframe().set_index(["layer", "head"])
    assert heads.loc[(0, 0), "sink_kind"] == "no-op" and heads.loc[(1, 0), "sink_kind"] == "active"
    assert heads.loc[(0, 1), "sink_kind"] == "none"
    assert heads.loc[(1, 1), "sink_kind"] == "no-op"  # means: alpha_0 0.45 > 0.3, 0.1 / 0.35 < 0.5
    assert heads.loc[(0, 0), "value_ratio"] == pytest.approx(0.15 / 0.8)
    assert result.summary()["noop_share_pct"] == pytest.approx(60.0)
    assert result.layer_sink_rates()["noop_share_pct"].tolist() == pytest.approx([100.0, 100 / 3])
    # A resume log from before value weighting: no value columns, no no-ops, no error.
    old = combine(
        "m",
        config,
        [0, 1],
        2,
        tokens,
        [{k: v for k, v in r.items() if k != "weighted_first_token_mass"} for r in records],
    )
    assert not old.value_weighted and "sink_kind" not in old.to_dataframe()
    assert "noop_share_pct" not in old.summary()


def test_value_weighted_figure_draws_both_masses_and_the_noop_line():
    from interp.analyses.sinks import combine
    from interp.plots.sinks import sinks_figure, value_weighted_sinks

    config = SinkConfig(length=8, noop_ratio=0.4)
    rec = {
        "first_token_mass": [[0.8, 0.1]], "alpha0": [[0.9, 0.1]], "weighted_first_token_mass": [[0.2, 0.1]],
        "position_count": [0] * 8, "hits": [],
    }  # fmt: skip
    result = combine("m", config, [0], 2, [(["x"] * 8, [False] * 8)], [rec])
    fig = value_weighted_sinks(result)
    points = {tr.name: (list(tr.x), list(tr.y)) for tr in fig.data if tr.mode == "markers"}
    assert points == {"no-op sink": ([0.8], [0.2]), "not a sink": ([0.1], [0.1])}
    line = next(tr for tr in fig.data if tr.name.startswith("no-op below"))
    assert list(line.y) == [0, 0.4]
    assert "100% are no-ops" in fig.layout.title.text
    page = sinks_figure(result)
    assert any(tr.name == "no-op sink" for tr in page.data)

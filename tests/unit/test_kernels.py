"""interp.kernels.attention_stats: every backend against the float64 reference, and known answers.

Numerical rule (flash-attention's): |kernel - ref64| <= 2 |plain same-dtype torch - ref64| + tol,
where "plain same-dtype torch" is the dense reference run in the input dtype. Inputs are fresh
random tensors drawn from a hypothesis-chosen seed, so a failure is reproducible.

The Triton kernel runs under Triton's interpreter on CPU (in a TRITON_INTERPRET=1 subprocess,
see `test_triton_under_interpreter`) in fp32 and fp16 at T <= 512; test_kernels_gpu.py runs it
natively on a CUDA machine (pytest -m gpu), and test_kernels_compile.py compiles it for sm_90.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_cases import FLOAT_STATS, Case, check_against_reference, compare_to_reference, prepare_kwargs

from interp.kernels import AttentionStats, attention_stats
from interp.kernels._problem import prepare
from interp.kernels._reference import reference_probs

RECENT = (1, 3, 12, 100)  # windows of recent / distant for the closed forms: 1, inside, beyond T


@st.composite
def cases(draw, max_t: int = 96, max_heads: int = 16, dtype: torch.dtype = torch.float32) -> Case:
    """Shapes that stress the tiling: T below/above a tile, GQA 1/3/8, padding, query_pos < key_pos.

    max_heads bounds batch * head (the interpreter runs one program per head and row block).
    """
    ratio = draw(st.sampled_from([1, 3, 8]))
    kv = draw(st.integers(1, max(1, min(2, max_heads // ratio))))
    batch = draw(st.integers(1, max(1, min(2, max_heads // (kv * ratio)))))
    t = draw(st.integers(1, max_t))
    n_q = draw(st.one_of(st.just(t), st.integers(1, t)))
    d = draw(st.sampled_from([8, 16, 24, 64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    spread = draw(st.sampled_from([0.5, 1.0, 3.0]))  # larger = peakier attention
    q = (torch.randn(batch, kv * ratio, n_q, d, generator=gen) * spread).to(dtype)
    k = torch.randn(batch, kv, t, d, generator=gen).to(dtype)
    lo = draw(st.integers(0, 6))
    kwargs = dict(
        scale=d**-0.5,
        sink_tokens=draw(st.integers(0, min(4, t))),
        window=draw(st.integers(1, 12)),
        band=(lo, lo + draw(st.integers(0, 40))),
        causal=draw(st.sampled_from([True, True, True, False])),
    )
    if draw(st.booleans()):  # left padding, a different amount per batch element
        pads = [draw(st.integers(0, t - 1)) for _ in range(batch)]
        kwargs["key_padding_mask"] = torch.arange(t)[None, :] >= torch.tensor(pads)[:, None]
    if draw(st.booleans()):
        kwargs["segments"] = torch.randint(-1, 3, (batch, t), generator=gen)
    if draw(st.booleans()):
        kwargs["query_rows"] = torch.randint(0, n_q, (draw(st.integers(1, 5)),), generator=gen)
        kwargs["columns"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        kwargs["softcap"] = draw(st.sampled_from([1.0, 5.0]))
    if draw(st.integers(0, 3)) == 0:
        kwargs["sliding_window"] = draw(st.integers(1, t + 2))
    if draw(st.integers(0, 2)) == 0:  # learned sink logits (GPT-OSS), from negligible to dominant
        kwargs["sink_logits"] = torch.randn(kv * ratio, generator=gen) * draw(st.sampled_from([1.0, 4.0]))
    if draw(st.booleans()):  # windows of recent / distant, below and beyond T
        kwargs["recent_windows"] = tuple(draw(st.lists(st.integers(1, t + 3), min_size=1, max_size=3, unique=True)))
    if draw(st.booleans()):  # per-key weights (||v_j|| per kv head, ||W_O^h v_j|| per head), some exactly 0
        n_w = draw(st.sampled_from([kv, kv * ratio]))
        w = torch.randn(batch, n_w, t, generator=gen).abs() * draw(st.sampled_from([0.1, 1.0, 10.0]))
        if draw(st.booleans()):
            w = w * (torch.rand(batch, n_w, t, generator=gen) > 0.3)  # a value vector of norm 0
        kwargs["key_weight"] = w
    return Case(q, k, kwargs)


# ---------------------------------------------------------------- torch backend vs reference


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_torch_matches_reference(case: Case) -> None:
    check_against_reference(case, "torch")


@settings(max_examples=15, deadline=None)
@given(case=cases(max_t=64), chunk=st.integers(1, 9))
def test_torch_small_chunks_match_reference(case: Case, chunk: int) -> None:
    check_against_reference(case, "torch", chunk_size=chunk)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_torch_half_inputs_match_reference(dtype: torch.dtype, data) -> None:
    check_against_reference(data.draw(cases(dtype=dtype)), "torch")


def test_torch_long_rows_match_reference() -> None:
    """A few hundred keys with several chunks per batch element and GQA 4."""
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 8, 300, 32, generator=gen) * 2, torch.randn(1, 2, 700, 32, generator=gen)
    case = Case(q, k, dict(scale=32**-0.5, segments=torch.randint(-1, 4, (1, 700), generator=gen), sink_tokens=4))
    check_against_reference(case, "torch", chunk_size=37)


OPTIONS = [
    dict(query_rows=torch.tensor([40, 2, 2]), sliding_window=9, softcap=2.0, band=(0, 5), sink_tokens=3, recent_windows=(1, 4, 30)),
    dict(causal=False, columns=False, query_rows=torch.tensor([0, 5, 39]), window=3),
    dict(causal=False, band=(-4, 4), key_padding_mask=torch.arange(70)[None] >= 3, recent_windows=(2, 20), sink_tokens=4),
    dict(key_padding_mask=(torch.arange(70)[None] % 7) != 3),  # holes, not left padding
    dict(sliding_window=23, recent_windows=(5, 23, 40)),
    dict(softcap=3.0, band=(0, 30)),
    dict(sink_logits=torch.tensor([-1.0, 2.5, 6.0]), sliding_window=12, softcap=4.0, key_padding_mask=torch.arange(70)[None] >= 9, recent_windows=(3, 64)),
    dict(sink_logits=torch.tensor([0.5, -3.0, 3.0]), causal=False, key_padding_mask=(torch.arange(70)[None] % 5) != 1, recent_windows=(7,)),
    dict(key_weight=torch.linspace(0, 3, 70).view(1, 1, 70) ** 2, sink_logits=torch.tensor([-1.0, 2.5, 6.0]), sliding_window=12, key_padding_mask=torch.arange(70)[None] >= 9, recent_windows=(3, 64), sink_tokens=3),
    dict(key_weight=torch.rand(1, 3, 70, generator=torch.Generator().manual_seed(5)) * (torch.arange(70) % 4 != 0), causal=False, query_rows=torch.tensor([0, 7, 44]), recent_windows=(7,), sink_tokens=2),
]  # fmt: skip
OPTION_IDS = [
    "kv-cache-rows-window-softcap", "bidirectional-rows-only", "bidirectional-padded", "mask-with-holes",
    "sliding-window", "softcap", "sinks-window-softcap-padded", "sinks-bidirectional-holes",
    "kv-weights-sinks-window-padded", "head-weights-with-zeros-bidirectional-rows",
]  # fmt: skip


def options_case(kwargs: dict) -> Case:
    """query_pos < key_pos (45 of 70) with the extras: window, soft-cap, non-causal, rows, holes."""
    gen = torch.Generator().manual_seed(11)
    q, k = torch.randn(1, 3, 45, 16, generator=gen) * 2, torch.randn(1, 1, 70, 16, generator=gen)
    return Case(q, k, dict(scale=0.25, **kwargs))


@pytest.mark.parametrize("kwargs", OPTIONS, ids=OPTION_IDS)
def test_torch_options_match_reference(kwargs: dict) -> None:
    check_against_reference(options_case(kwargs), "torch", chunk_size=16)


def test_torch_long_rows_with_sinks_window_softcap_padding() -> None:
    """450 keys in chunks of 37 rows (not a divisor), GQA 4, sinks with window, cap and padding."""
    gen = torch.Generator().manual_seed(12)
    q, k = torch.randn(2, 4, 450, 32, generator=gen) * 2, torch.randn(2, 1, 450, 32, generator=gen)
    mask = torch.arange(450)[None] >= torch.tensor([[0], [123]])
    kwargs = dict(scale=32**-0.5, key_padding_mask=mask, sliding_window=150, softcap=8.0, sink_tokens=4)
    case = Case(q, k, dict(sink_logits=torch.randn(4, generator=gen) * 3, **kwargs))
    check_against_reference(case, "torch", chunk_size=37)


# ---------------------------------------------------------------- learned sink logits (GPT-OSS)


@pytest.mark.parametrize("sliding_window", [None, 9])
def test_sink_logits_match_hf_gpt_oss_eager_attention(sliding_window: int | None) -> None:
    """A is HF transformers' GPT-OSS eager attention weights: softmax over [s, sink], sink dropped."""
    from types import SimpleNamespace

    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    gen = torch.Generator().manual_seed(13)
    t, heads, kv = 37, 6, 2
    q = torch.randn(2, heads, t, 16, generator=gen, dtype=torch.float64) * 2
    k = torch.randn(2, kv, t, 16, generator=gen, dtype=torch.float64)
    sinks = torch.randn(heads, generator=gen, dtype=torch.float64) * 3
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    visible = (j <= i) & ((j > i - sliding_window) if sliding_window else True)
    additive = torch.zeros(t, t, dtype=torch.float64).masked_fill(~visible, torch.finfo(torch.float64).min)
    module = SimpleNamespace(num_key_value_groups=heads // kv, sinks=sinks, training=False)
    _, hf = eager_attention_forward(module, q, k, k, additive[None, None], scaling=0.25)  # [b, h, t, t]

    kw = dict(scale=0.25, sink_logits=sinks, sliding_window=sliding_window, sink_tokens=2, band=(1, 5))
    problem = prepare(q, k, **prepare_kwargs(kw))
    torch.testing.assert_close(reference_probs(problem)[1], hf, rtol=0, atol=1e-12)
    scores = (q @ k.repeat_interleave(heads // kv, 1).transpose(-1, -2) * 0.25).masked_fill(~visible, -math.inf)
    lag = (i - j).double()
    want = {
        "lse": torch.logaddexp(torch.logsumexp(scores, -1), sinks[None, :, None]),
        "top1p": hf.amax(-1),
        "entropy": torch.special.entr(hf).sum(-1),
        "sink": hf[..., :2].sum(-1),
        "dist": (hf * lag).sum(-1),
        "waad": (hf * lag.clamp(max=10)).sum(-1),
        "recv": hf.sum(-2),
    }
    assert (hf.sum(-1) < 1 - 1e-6).all()  # the sink keeps a share of every row: a real test of it
    for backend in ("reference", "torch"):
        got = attention_stats(q.float(), k.float(), backend=backend, **kw)
        for name, value in want.items():
            torch.testing.assert_close(
                getattr(got, name).double(), value, rtol=1e-5, atol=1e-5, msg=f"{backend} {name}"
            )
        assert torch.equal(got.top1, hf.argmax(-1)), backend


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_zero_queries_with_sink_logits(backend: str) -> None:
    """q = 0: A_ij = 1 / (exp(sigma_h) + i + 1) for j <= i, so every statistic has a closed form."""
    q = torch.zeros(1, 3, 40, 16)
    k = torch.randn(1, 1, 40, 16, generator=torch.Generator().manual_seed(14))
    sinks = torch.tensor([-2.0, 0.7, 3.0])
    kw = dict(band=(3, 9), window=5, sink_tokens=2, sink_logits=sinks, recent_windows=RECENT)
    st_ = attention_stats(q, k, scale=0.25, **kw, backend=backend)
    _assert_uniform_with_sinks(st_, sinks, 40, 5, 2)


def _assert_uniform_with_sinks(st_: AttentionStats, sinks: torch.Tensor, t: int, w: int, n: int) -> None:
    i = torch.arange(t, dtype=torch.float64)
    z = sinks.double()[:, None].exp() + i + 1  # [head, t] the normaliser with the sink
    expect = {
        "lse": z.log(),
        "top1p": 1 / z,
        "entropy": (i + 1) / z * z.log(),
        "dist": i * (i + 1) / 2 / z,
        "sink": i.clamp(max=n - 1).add(1) / z,
        "waad": torch.tensor([sum(min(d, w) for d in range(r + 1)) for r in range(t)], dtype=torch.float64) / z,
        "recv": (1 / z).flip(-1).cumsum(-1).flip(-1),  # sum_{i >= j} 1 / z_i
        "first": 1 / z,
        "self_mass": 1 / z,
        **_uniform_windows(i, n, (i + 1) / z),
    }
    for name, want in expect.items():
        got = getattr(st_, name).double()[0]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert (st_.top1 == 0).all()


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_sink_logits_extremes(backend: str) -> None:
    """A negligible sink changes nothing; any sink leaves top1 alone; row mass is 1 - exp(sigma - lse)."""
    gen = torch.Generator().manual_seed(15)
    q, k = torch.randn(2, 4, 30, 16, generator=gen) * 2, torch.randn(2, 2, 30, 16, generator=gen)
    kw = dict(scale=0.25, key_padding_mask=torch.arange(30)[None] >= torch.tensor([[0], [6]]), backend=backend)
    plain = attention_stats(q, k, **kw)
    faint = attention_stats(q, k, sink_logits=torch.full((4,), -80.0), **kw)
    for name in (*FLOAT_STATS, "top1"):
        a, b = getattr(plain, name), getattr(faint, name)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, equal_nan=True, msg=name)
    sinks = torch.tensor([-1.0, 1.0, 4.0, 9.0])
    heavy = attention_stats(q, k, sink_logits=sinks, **kw)
    assert torch.equal(heavy.top1, plain.top1)
    mass = 1 - torch.exp(sinks[None, :, None].double() - heavy.lse.double())  # per row
    recv_total = heavy.recv.double().nan_to_num(0.0).sum(-1)  # sum over keys = sum over rows of mass
    torch.testing.assert_close(recv_total, mass.nan_to_num(0.0).sum(-1), rtol=1e-5, atol=1e-5)
    real = ~plain.lse.isnan()
    assert real.sum() == 4 * (60 - 6) and not heavy.lse[real].isnan().any()
    assert (mass[real] < 1).all() and (heavy.top1p[real] < plain.top1p[real]).all()
    # the keys keep their ratios (mass from lse cancels in float32 when the sink dominates: atol)
    torch.testing.assert_close(heavy.top1p.double(), plain.top1p.double() * mass, rtol=1e-5, atol=2e-6, equal_nan=True)


# ---------------------------------------------------------------- answers known in closed form


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_zero_queries_give_uniform_attention(backend: str) -> None:
    """q = 0: A_ij = 1/(i+1), so every statistic has a closed form."""
    t, lo, hi, w, n = 40, 3, 9, 5, 2
    q = torch.zeros(1, 2, t, 16)
    k = torch.randn(1, 1, t, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(band=(lo, hi), window=w, sink_tokens=n, recent_windows=RECENT)
    st_ = attention_stats(q, k, scale=0.25, **kw, backend=backend)
    _assert_uniform(st_, t, lo, hi, w, n)


def _uniform_windows(i: torch.Tensor, n: int, mass: torch.Tensor) -> dict[str, torch.Tensor]:
    """recent / distant when row i spreads `mass` evenly over keys 0..i, n sink tokens."""
    w = torch.tensor(RECENT, dtype=torch.float64)
    keys = i[:, None] + 1
    recent = torch.minimum(w, keys)  # keys j with i - j < w
    distant = (i[:, None] - w - n + 1).clamp(min=0)  # keys n <= j <= i - w
    return {"recent": recent / keys * mass[..., None], "distant": distant / keys * mass[..., None]}


def _assert_uniform(st_: AttentionStats, t: int, lo: int, hi: int, w: int, n: int) -> None:
    i = torch.arange(t, dtype=torch.float64)
    count = i + 1
    expect = {
        "first": 1 / count,
        "self_mass": 1 / count,
        **_uniform_windows(i, n, torch.ones(t, dtype=torch.float64)),
        "lse": torch.log(count),
        "entropy": torch.log(count),
        "top1p": 1 / count,
        "dist": i / 2,
        "sink": torch.clamp(count, max=n) / count,
        "waad": torch.tensor([sum(min(d, w) for d in range(r + 1)) / (r + 1) for r in range(t)], dtype=torch.float64),
    }
    harmonic = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(1 / count, 0)])  # H_0..H_t
    recv = harmonic[t] - harmonic[:t]  # sum_{i >= j} 1/(i+1)
    expect["recv"] = recv
    expect["recv_mean"] = recv / (t - i)
    band = []
    for j in range(t):
        rows = range(j + lo, min(t - 1, j + hi) + 1)
        band.append(sum(1 / (r + 1) for r in rows) / len(rows) if len(rows) else math.nan)
    expect["band"] = torch.tensor(band, dtype=torch.float64)
    for name, want in expect.items():
        got = getattr(st_, name).double()
        torch.testing.assert_close(got, want.expand_as(got), rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
    assert (st_.top1 == 0).all()  # all keys tie: the smallest index wins


ROW_MASS_CASES = {
    # (batch, heads, kv, query_pos, key_pos, kwargs): decode, left padding, GQA, windows, sinks
    "padded-gqa": (2, 4, 2, 30, 30, dict(key_padding_mask=torch.arange(30)[None] >= torch.tensor([[0], [8]]), sink_tokens=2)),
    "decode-window": (1, 3, 1, 5, 40, dict(sliding_window=9, sink_tokens=3)),
    "window-longer-than-T": (1, 2, 1, 25, 25, dict(sliding_window=60, sink_tokens=0)),
    "sink-logits-rows": (1, 3, 1, 28, 28, dict(sink_logits=torch.tensor([-1.0, 1.0, 4.0]), query_rows=torch.tensor([27, 0, 9, 9]))),
    "bidirectional": (1, 2, 1, 20, 26, dict(causal=False, sink_tokens=2)),
}  # fmt: skip


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("name", list(ROW_MASS_CASES))
def test_row_masses_by_definition(name: str, backend: str) -> None:
    """first, self_mass, recent, distant read off the dense float64 A one entry at a time."""
    batch, heads, kv, n_q, t, kwargs = ROW_MASS_CASES[name]
    gen = torch.Generator().manual_seed(19)
    q, k = torch.randn(batch, heads, n_q, 16, generator=gen) * 2, torch.randn(batch, kv, t, 16, generator=gen)
    windows = (1, 4, 11, t + 5)
    got = attention_stats(q, k, scale=0.25, recent_windows=windows, backend=backend, **kwargs)
    problem = prepare(q, k, **prepare_kwargs(dict(scale=0.25, **kwargs)))
    _, a = reference_probs(problem)  # [batch, head, query_pos, key_pos] float64
    n_sink = problem.sink_tokens
    for b in range(batch):
        fr = int(problem.first_real[b])
        for r, row in enumerate(problem.rows.tolist()):
            i = problem.offset + row  # the query's key index
            if i < fr:  # a padded query row
                assert got.first[b, :, r].isnan().all() and got.recent[b, :, r].isnan().all()
                continue
            want = {
                "first": a[b, :, row, fr],
                "self_mass": a[b, :, row, i],
                "recent": torch.stack([a[b, :, row, max(i - w + 1, 0) : i + 1].sum(-1) for w in windows], -1),
                "distant": torch.stack([a[b, :, row, fr + n_sink : max(i - w + 1, 0)].sum(-1) for w in windows], -1),
            }
            for stat, value in want.items():
                torch.testing.assert_close(getattr(got, stat)[b, :, r].double(), value, rtol=1e-5, atol=1e-6, msg=stat)
    assert got.recent_windows == windows


def test_row_masses_in_the_dataframe() -> None:
    gen = torch.Generator().manual_seed(20)
    q, k = torch.randn(1, 2, 9, 8, generator=gen), torch.randn(1, 1, 9, 8, generator=gen)
    st_ = attention_stats(q, k, scale=0.3, recent_windows=(2, 8), backend="torch")
    rows = st_.to_dataframe()
    assert {"first", "self_mass", "recent_2", "recent_8", "distant_2", "distant_8"} <= set(rows.columns)
    one = rows[(rows["head"] == 1) & (rows["row"] == 7)]
    assert one.distant_2.item() == pytest.approx(st_.distant[0, 1, 7, 0].item())
    plain = attention_stats(q, k, scale=0.3, backend="torch")
    assert plain.recent is None and plain.distant is None and "recent_2" not in plain.to_dataframe().columns


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_dominating_key_is_top1(backend: str) -> None:
    """A key aligned with every query and much longer than the rest takes nearly all mass."""
    gen = torch.Generator().manual_seed(3)
    t, star = 50, 17
    u = torch.randn(16, generator=gen)
    q = u * torch.rand(1, 3, t, 1, generator=gen).add(0.5)  # all queries point along u
    k = torch.randn(1, 1, t, 16, generator=gen) * 0.1
    k[0, 0, star] = 40 * u / u.norm() ** 2
    st_ = attention_stats(q, k, scale=1.0, backend=backend)
    after = slice(star, None)
    assert (st_.top1[..., after] == star).all()
    assert (st_.top1p[..., after] > 0.99).all()
    assert (st_.top1[..., :star] != star).all()  # causal: rows before the key cannot see it
    assert torch.allclose(st_.dist[..., after].double(), (torch.arange(star, t) - star).double(), atol=0.05 * t)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_left_padding_is_invisible(backend: str) -> None:
    """Left-padding a sequence changes nothing for its real tokens; padded slots are NaN / -1."""
    gen = torch.Generator().manual_seed(4)
    t, pad = 30, 7
    q, k = torch.randn(1, 4, t, 16, generator=gen), torch.randn(1, 2, t, 16, generator=gen)
    segs = torch.randint(-1, 2, (1, t), generator=gen)
    kw = dict(scale=0.25, band=(2, 9), sink_tokens=3, recent_windows=(1, 6, 40), backend=backend)
    plain = attention_stats(q, k, segments=segs, n_segments=2, **kw)
    qp = torch.cat([torch.randn(1, 4, pad, 16, generator=gen), q], 2)
    kp = torch.cat([torch.randn(1, 2, pad, 16, generator=gen), k], 2)
    mask = torch.arange(t + pad)[None] >= pad
    segp = torch.cat([torch.full((1, pad), 1), segs], 1)  # labels on padding must not count
    padded = attention_stats(qp, kp, segments=segp, n_segments=2, key_padding_mask=mask.long(), **kw)
    for name in (*FLOAT_STATS, "top1"):
        a, b = getattr(plain, name), getattr(padded, name)
        if a is None:  # not asked for (target-key statistics)
            assert b is None, name
            continue
        shifted = a + (pad if name == "top1" else 0)  # top1 is a key index: shifted by the padding
        torch.testing.assert_close(b[:, :, pad:], shifted, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
        if name == "top1":
            assert (b[:, :, :pad] == -1).all()
        else:
            assert b[:, :, :pad].isnan().all(), name


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gqa_equals_repeated_keys(backend: str) -> None:
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 6, 20, 8, generator=gen), torch.randn(2, 2, 20, 8, generator=gen)
    grouped = attention_stats(q, k, scale=0.3, backend=backend)
    repeated = attention_stats(q, k.repeat_interleave(3, dim=1), scale=0.3, backend=backend)
    for name in (*FLOAT_STATS, "top1"):
        a, b = getattr(grouped, name), getattr(repeated, name)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_query_rows_and_kv_cache_select_rows_of_the_full_result(backend: str) -> None:
    gen = torch.Generator().manual_seed(6)
    q, k = torch.randn(1, 3, 25, 8, generator=gen), torch.randn(1, 1, 25, 8, generator=gen)
    full = attention_stats(q, k, scale=0.4, backend=backend)
    rows = torch.tensor([24, 3, 3, 10])
    picked = attention_stats(q, k, scale=0.4, query_rows=rows, columns=False, backend=backend)
    tail = attention_stats(q[:, :, -5:], k, scale=0.4, backend=backend)  # queries end-aligned
    assert picked.recv is None and torch.equal(picked.query_rows, rows)
    assert torch.equal(tail.query_rows, torch.arange(20, 25))
    for name in ("lse", "top1", "entropy", "dist", "waad", "sink"):
        torch.testing.assert_close(getattr(picked, name), getattr(full, name)[..., rows], msg=name)
        torch.testing.assert_close(getattr(tail, name), getattr(full, name)[..., -5:], msg=name)


def test_to_dataframe_long_format() -> None:
    gen = torch.Generator().manual_seed(7)
    q, k = torch.randn(2, 3, 6, 8, generator=gen), torch.randn(2, 3, 6, 8, generator=gen)
    st_ = attention_stats(q, k, scale=0.3, segments=torch.zeros(2, 6, dtype=torch.long), backend="torch")
    rows = st_.to_dataframe()
    assert len(rows) == 2 * 3 * 6 and {"batch", "head", "row", "lse", "top1", "seg_0"} <= set(rows.columns)
    one = rows[(rows["batch"] == 1) & (rows["head"] == 2) & (rows["row"] == 4)]
    assert one.entropy.item() == pytest.approx(st_.entropy[1, 2, 4].item())
    cols = st_.to_dataframe("columns")
    assert len(cols) == 2 * 3 * 6 and cols.recv.sum() == pytest.approx(2 * 3 * 6, rel=1e-5)  # rows sum to 1


# ---------------------------------------------------------------- Triton (interpreter on CPU)


def _interpreter_active() -> bool:
    """Whether this process runs Triton's interpreter: TRITON_INTERPRET=1 before `import triton`."""
    if os.environ.get("TRITON_INTERPRET") != "1" or importlib.util.find_spec("triton") is None:
        return False
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)  # triton's own jit helpers are interpreted too


interpreted = pytest.mark.skipif(
    not _interpreter_active(), reason="runs in the TRITON_INTERPRET=1 subprocess of test_triton_under_interpreter"
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.skipif(_interpreter_active(), reason="this process already runs the interpreter tests itself")
def test_triton_under_interpreter() -> None:
    """Run this module's interpreter tests in a fresh process with TRITON_INTERPRET=1.

    Triton reads the variable when it is first imported (its own jit helpers such as
    tl.zeros are built then), so it cannot be switched on inside a running test session.
    """
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider", "-k", "interpreted_triton"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_interpreted_triton_matches_reference(dtype: torch.dtype, data) -> None:
    check_against_reference(data.draw(cases(max_t=130, max_heads=8, dtype=dtype)), "triton")


@interpreted
@pytest.mark.parametrize("kwargs", OPTIONS, ids=OPTION_IDS)
def test_interpreted_triton_options_match_reference(kwargs: dict) -> None:
    check_against_reference(options_case(kwargs), "triton")


@interpreted
def test_interpreted_triton_long_sequence_matches_reference() -> None:
    """T = 512: many tiles per row and per column, fp16, GQA 2, two segments, left padding."""
    gen = torch.Generator().manual_seed(8)
    q = (torch.randn(1, 2, 512, 16, generator=gen) * 2).half()
    k = torch.randn(1, 1, 512, 16, generator=gen).half()
    mask = torch.arange(512)[None] >= 5
    case = Case(q, k, dict(scale=0.25, key_padding_mask=mask, segments=torch.randint(-1, 2, (1, 512), generator=gen)))
    check_against_reference(case, "triton")


@interpreted
def test_interpreted_triton_uniform_attention() -> None:
    t, lo, hi, w, n = 70, 3, 9, 5, 2
    q = torch.zeros(1, 1, t, 16)
    k = torch.randn(1, 1, t, 16, generator=torch.Generator().manual_seed(9))
    kw = dict(band=(lo, hi), window=w, sink_tokens=n, recent_windows=RECENT)
    st_ = attention_stats(q, k, scale=0.25, **kw, backend="triton")
    _assert_uniform(st_, t, lo, hi, w, n)


@interpreted
def test_interpreted_triton_zero_queries_with_sink_logits() -> None:
    q = torch.zeros(1, 3, 70, 16)
    k = torch.randn(1, 1, 70, 16, generator=torch.Generator().manual_seed(16))
    sinks = torch.tensor([-2.0, 0.7, 3.0])
    kw = dict(window=5, sink_tokens=2, sink_logits=sinks, recent_windows=RECENT)
    st_ = attention_stats(q, k, scale=0.25, **kw, backend="triton")
    _assert_uniform_with_sinks(st_, sinks, 70, 5, 2)


SINK_LONG = {
    # T = 333 (not a multiple of the 64-key tile), GQA 2, left padding, sinks with window and cap
    "fp32-sinks-window-softcap-padded": (torch.float32, 333, dict(sliding_window=100, softcap=5.0)),
    # fp16, a full causal row over 200 keys, segments and padding
    "fp16-sinks-segments-padded": (torch.float16, 200, dict(segments=True)),
}


@interpreted
@pytest.mark.parametrize("name", list(SINK_LONG))
def test_interpreted_triton_sink_logits_long(name: str) -> None:
    dtype, t, extra = SINK_LONG[name]
    gen = torch.Generator().manual_seed(17)
    q = (torch.randn(2, 4, t, 16, generator=gen) * 2).to(dtype)
    k = torch.randn(2, 2, t, 16, generator=gen).to(dtype)
    kw = dict(scale=0.25, key_padding_mask=torch.arange(t)[None] >= torch.tensor([[0], [37]]), **extra)
    if kw.pop("segments", False):
        kw["segments"] = torch.randint(-1, 3, (2, t), generator=gen)
    check_against_reference(Case(q, k, dict(sink_logits=torch.tensor([-1.0, 0.5, 2.0, 5.0]), **kw)), "triton")


@interpreted
def test_interpreted_triton_every_tile_shape_of_the_search_spaces() -> None:
    """Each (BLOCK_M, BLOCK_N) of both autotune lists, forced, on a problem with every feature.

    T = 150 (no tile divides it), 130 queries (KV-cache offset), GQA 2, left padding,
    segments, sinks, window and soft-cap: the tile-edge masks of every shape get exercised.
    """
    from interp.kernels._triton import triton_stats
    from interp.kernels._triton_tune import _COL_SPACE, _ROW_SPACE
    from interp.kernels.stats import _finalize

    gen = torch.Generator().manual_seed(18)
    q, k = torch.randn(1, 2, 130, 16, generator=gen) * 2, torch.randn(1, 1, 150, 16, generator=gen)
    kw = dict(
        scale=0.25, key_padding_mask=torch.arange(150)[None] >= 29, sliding_window=70, softcap=5.0,
        segments=torch.randint(-1, 2, (1, 150), generator=gen), sink_logits=torch.tensor([0.5, 3.0]), band=(2, 40),
        recent_windows=(4, 65),
    )  # fmt: skip
    case = Case(q, k, kw)
    problem = prepare(q, k, **prepare_kwargs(kw))
    tiles = sorted({(m, n) for m, n, _, _ in _ROW_SPACE + _COL_SPACE})
    assert len(tiles) >= 6
    for block_m, block_n in tiles:
        compare_to_reference(case, _finalize(problem, triton_stats(problem, {"BLOCK_M": block_m, "BLOCK_N": block_n})))

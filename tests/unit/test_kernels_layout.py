"""`layout=` of attention_stats and attention_pattern: TransformerLens's [batch, pos, head, d_head]
reads the same as the kernel's own order, and a shape that cannot be the named layout is one error."""

from __future__ import annotations

import math

import pytest
import torch

from interp.errors import InterpError
from interp.kernels import attention_pattern, attention_stats


def _qk_bthd(batch=2, t=37, heads=6, kv=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, t, heads, d, generator=g), torch.randn(batch, t, kv, d, generator=g)


def _softmax64_bthd(q, k, scale, window, mask):
    """Float64 causal (windowed) softmax straight from [batch, pos, head, d_head] tensors."""
    q64, k64 = q.double(), k.double()
    group = q.shape[2] // k.shape[2]
    k64 = k64.repeat_interleave(group, dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q64, k64) * scale
    t = q.shape[1]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    see = (j <= i) & (i - j < window)
    see = see[None, None] & mask[:, None, None, :]
    s = s.masked_fill(~see, float("-inf"))
    a = torch.softmax(s, -1)
    return torch.nan_to_num(a, nan=0.0) * mask[:, None, :, None]  # padded query rows: 0


def test_bthd_pattern_matches_float64_softmax_gqa_window_padding():
    q, k = _qk_bthd()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, :5] = False  # left padding
    scale = 1 / math.sqrt(8)
    got = attention_pattern(q, k, scale=scale, sliding_window=9, key_padding_mask=mask, layout="bthd")
    want = _softmax64_bthd(q, k, scale, 9, mask)
    assert got.shape == (2, 6, 37, 37)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_bthd_stats_equal_bhtd_stats_of_the_transposed_tensors():
    q, k = _qk_bthd(t=41)
    mask = torch.ones(2, 41, dtype=torch.bool)
    mask[0, :3] = False
    kw = dict(scale=0.3, key_padding_mask=mask, sliding_window=11, backend="torch")
    a = attention_stats(q, k, layout="bthd", **kw)
    b = attention_stats(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), **kw)
    for name in ("entropy", "sink", "dist", "lse", "recv"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True)
    # and the entropy is the float64 softmax's (an independent computation)
    p = _softmax64_bthd(q, k, 0.3, 11, mask)
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    real = mask[:, None, :].expand_as(ent)
    torch.testing.assert_close(a.entropy.double()[real], ent[real], atol=1e-5, rtol=1e-5)


def test_tl_tensors_read_as_bhtd_are_refused_naming_the_layout():
    q, k = _qk_bthd(heads=4, kv=4, t=20)  # MHA: no GQA check catches the swap
    with pytest.raises(InterpError, match=r"cannot be layout 'bhtd'.*pass layout='bthd'"):
        attention_stats(q, k, scale=0.3)
    with pytest.raises(InterpError, match=r"cannot be layout 'bhtd'"):
        attention_pattern(q, k, scale=0.3)


def test_gqa_tensors_in_the_wrong_order_are_refused_naming_the_layout():
    q, k = _qk_bthd(heads=9, kv=3, t=12)  # SmolLM2's 9 q / 3 kv heads
    with pytest.raises(InterpError, match=r"cannot be layout 'bhtd'"):
        attention_stats(q, k, scale=0.3)
    qh, kh = q.transpose(1, 2), k.transpose(1, 2)
    with pytest.raises(InterpError, match=r"cannot be layout 'bthd'.*pass layout='bhtd'"):
        attention_pattern(qh, kh, scale=0.3, layout="bthd")
    kv_bad = torch.randn(2, 12, 4, 8)  # 4 kv heads do not divide 9
    with pytest.raises(InterpError, match="not a multiple of kv_head"):
        attention_stats(q, kv_bad, scale=0.3, layout="bthd")


def test_unknown_layout_is_one_error():
    q, k = _qk_bthd()
    with pytest.raises(InterpError, match="layout must be 'bhtd'"):
        attention_stats(q, k, scale=0.3, layout="bhdt")


def test_short_decode_step_with_many_heads_is_not_refused():
    # one query row over 40 keys with 32 heads: heads > query rows is ordinary (a KV-cache step)
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 32, 1, 8, generator=g), torch.randn(1, 8, 40, 8, generator=g)
    a = attention_pattern(q, k, scale=0.3)
    torch.testing.assert_close(a.sum(-1), torch.ones(1, 32, 1, dtype=torch.float64))

"""`interp.kernels.attention_pattern` against a dense float64 softmax written here from the definition
(docs/METRICS.md#notation), on fresh random inputs: GQA, query_pos < key_pos, left padding, a
sliding window, a soft-cap, sink logits; row blocks equal the full pattern's rows."""

from __future__ import annotations

import math

import pytest
import torch

from interp.errors import InterpError
from interp.kernels import attention_pattern


def _dense(q, k, *, scale, causal=True, softcap=None, sliding_window=None, sink_logits=None, key_padding_mask=None):
    """A [batch, head, query_pos, key_pos] in float64, one (batch, head, row) at a time."""
    b, h, nq, _ = q.shape
    nk, group = k.shape[2], h // k.shape[1]
    out = torch.zeros(b, h, nq, nk, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(nq):
                a_i = nk - nq + i  # end-aligned absolute position
                if key_padding_mask is not None and not key_padding_mask[bi, a_i]:
                    continue  # a padded query row: all zero
                terms = {}
                for j in range(nk):
                    if (causal and j > a_i) or (sliding_window is not None and j <= a_i - sliding_window):
                        continue
                    if key_padding_mask is not None and not key_padding_mask[bi, j]:
                        continue
                    s = scale * float(q[bi, hi, i].double() @ k[bi, hi // group, j].double())
                    terms[j] = softcap * math.tanh(s / softcap) if softcap else s
                top = max(list(terms.values()) + ([float(sink_logits[hi])] if sink_logits is not None else []))
                norm = sum(math.exp(v - top) for v in terms.values())
                norm += math.exp(float(sink_logits[hi]) - top) if sink_logits is not None else 0.0
                for j, v in terms.items():
                    out[bi, hi, i, j] = math.exp(v - top) / norm
    return out


@pytest.mark.parametrize("window,softcap,sinks", [(None, None, False), (5, 20.0, False), (4, None, True)])
def test_matches_dense_definition(window, softcap, sinks):
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 4, 9, 8, generator=g)  # 4 query heads over 2 kv heads, 9 of 13 positions queried
    k = torch.randn(2, 2, 13, 8, generator=g)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, :3] = False  # left padding of the second sequence
    kw = dict(scale=0.4, softcap=softcap, sliding_window=window, key_padding_mask=mask)
    if sinks:
        kw["sink_logits"] = torch.randn(4, generator=g)
    want = _dense(q, k, **kw)
    got = attention_pattern(q, k, **kw)
    assert got.dtype == torch.float64 and got.shape == (2, 4, 9, 13)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # a block of rows is those rows of the whole (the causal block is cut at its last row's keys)
    torch.testing.assert_close(attention_pattern(q, k, **kw, rows=(3, 7)), got[:, :, 3:7], rtol=1e-12, atol=1e-14)
    masked = attention_pattern(q, k, **kw, masked=True)
    visible = want > 0
    assert torch.equal(torch.isnan(masked[1, :, 3:]), ~visible[1, :, 3:])  # real rows: NaN exactly off the visible keys
    # float32 on request, within float32 rounding of the reference
    torch.testing.assert_close(attention_pattern(q, k, **kw, dtype=torch.float32).double(), want, rtol=1e-4, atol=1e-6)


def test_non_causal_rows_and_errors():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 2, 6, 4, generator=g), torch.randn(1, 2, 6, 4, generator=g)
    full = attention_pattern(q, k, scale=0.5, causal=False)
    torch.testing.assert_close(full, _dense(q, k, scale=0.5, causal=False))
    torch.testing.assert_close(attention_pattern(q, k, scale=0.5, causal=False, rows=(2, 5)), full[:, :, 2:5])
    with pytest.raises(InterpError, match="outside the 6 query rows"):
        attention_pattern(q, k, scale=0.5, rows=(4, 9))
    with pytest.raises(InterpError, match="scale"):
        attention_pattern(q, k, scale=-1.0)  # the kernel's own validation

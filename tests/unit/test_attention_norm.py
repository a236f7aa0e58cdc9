"""`interp attention --weighting norm`: the norm-weighted pattern a_ij w_j / sum_j' a_ij' w_j' of one
head, against a dense float64 computation on fresh random q, k and weights (window, soft-cap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import InterpError
from interp.plots.attention import head_pattern, norm_view


def _dense(q, k, w, scale, window=None, softcap=None):
    t = q.shape[0]
    s = (q.double() @ k.double().T) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    visible = (j <= i) & ((i - j) < (window or t + 1))
    a = torch.softmax(s.masked_fill(~visible, float("-inf")), -1)
    aw = a * w.double()
    return aw / aw.sum(-1, keepdim=True), visible


@pytest.mark.parametrize("window,softcap", [(None, None), (7, 3.0)])
def test_norm_weighted_pattern_matches_float64(window, softcap):
    g = torch.Generator().manual_seed(5)
    t, d = 29, 16
    q, k = torch.randn(t, d, generator=g), torch.randn(t, d, generator=g)
    w = torch.rand(t, generator=g, dtype=torch.float64) * 3 + 0.01
    want, visible = _dense(q, k, w, d**-0.5, window, softcap)
    got = head_pattern(q, k, scale=d**-0.5, window=window, softcap=softcap, key_weight=w, chunk_size=8)
    assert got.exact
    assert np.allclose(got.values[visible.numpy()], want[visible].numpy(), atol=1e-6)
    assert np.isnan(got.values[~visible.numpy()]).all()
    plain = head_pattern(q, k, scale=d**-0.5, window=window, softcap=softcap)
    assert np.abs(plain.values[visible.numpy()] - got.values[visible.numpy()]).max() > 1e-2  # the weight matters
    # Pooled: the block mean of the same weighted rows.
    pooled = head_pattern(q, k, scale=d**-0.5, window=window, softcap=softcap, key_weight=w, max_exact=8, blocks=4)
    b = pooled.block
    r0, c0 = 2 * b, b  # one block below the diagonal
    cells = want[r0 : r0 + b, c0 : c0 + b][visible[r0 : r0 + b, c0 : c0 + b]]
    assert pooled.values[2, 1] == pytest.approx(float(cells.mean()), abs=1e-6)


def test_norm_view_draws_plain_and_weighted_side_by_side():
    g = torch.Generator().manual_seed(6)
    t, d = 12, 8
    q, k = torch.randn(t, d, generator=g), torch.randn(t, d, generator=g)
    w = torch.ones(t, dtype=torch.float64)
    w[0] = 1e-3  # a first key that adds almost nothing
    fig = norm_view(q, k, w, [f"t{i}" for i in range(t)], scale=d**-0.5, layer=3, head=1)
    left, right = fig.data
    assert left.xaxis == "x" and right.xaxis == "x2"
    plain = head_pattern(q, k, scale=d**-0.5).values
    assert np.allclose(np.asarray(left.z, dtype=float), plain, equal_nan=True)
    right_z = np.asarray(right.z, dtype=float)
    assert (right_z[1:, 0] < plain[1:, 0]).all()  # the tiny first value fades on the right
    assert np.allclose(np.nansum(right_z, -1), 1.0, atol=1e-5)  # each row is a distribution
    assert "norm-weighted" in right.hovertemplate and "layer 3 head 1" in fig.layout.title.text


def test_key_weight_must_fit_the_keys():
    q = torch.randn(5, 4)
    with pytest.raises(InterpError, match="one finite weight >= 0 per key"):
        head_pattern(q, q, scale=0.5, key_weight=torch.ones(4))
    with pytest.raises(InterpError, match="one finite weight >= 0 per key"):
        head_pattern(q, q, scale=0.5, key_weight=-torch.ones(5))

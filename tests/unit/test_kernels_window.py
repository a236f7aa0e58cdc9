"""Per-key averages in sliding-window layers: each key's mean runs over the queries that may see it.

recv_mean_j (Gu et al.'s alpha_j) and band_j (FAI) are means over queries; in a
sliding-window layer only the real queries with 0 <= a_i - j < sliding_window can see key j,
so only they count. The checks here derive the means again by brute force (Python loops over
queries, from the dense float64 attention) and in closed form (uniform attention), so they do
not rely on either `column_counts` or the reference's own counting.
"""

from __future__ import annotations

import math

import pytest
import torch

from interp.kernels import attention_stats
from interp.kernels._problem import prepare
from interp.kernels._reference import reference_probs

BACKENDS = ["reference", "torch"]


def brute_force_columns(q, k, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(recv_mean, band) [batch, head, key_pos] float64 by the definition, one query at a time."""
    full = dict(
        causal=True, softcap=None, sliding_window=None, sink_tokens=1, window=10, band=(10, 100), segments=None,
        n_segments=None, key_padding_mask=None, query_rows=None, columns=True, sink_logits=None,
    )  # fmt: skip
    full.update(kwargs)
    problem = prepare(q, k, **full)
    _, a = reference_probs(problem)  # A itself is checked against HF's eager attention elsewhere
    lo, hi = full["band"]
    w = full["sliding_window"]
    real = problem.key_real.tolist()
    recv_mean = torch.full(a.shape[:2] + (problem.key_pos,), math.nan, dtype=torch.float64)
    band = recv_mean.clone()
    for b in range(problem.batch):
        for j in range(problem.key_pos):
            if not real[b][j]:
                continue
            sees, in_band = [], []
            for i in range(problem.query_pos):
                lag = problem.offset + i - j
                if not real[b][problem.offset + i] or (full["causal"] and lag < 0) or (w is not None and lag >= w):
                    continue
                sees.append(i)
                if lo <= lag <= hi:
                    in_band.append(i)
            if sees:
                recv_mean[b, :, j] = a[b, :, sees, j].mean(-1)
            if in_band:
                band[b, :, j] = a[b, :, in_band, j].mean(-1)
    return recv_mean, band


def _inputs(batch: int, heads: int, kv: int, n_q: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, n_q, 16, generator=gen) * 2, torch.randn(batch, kv, t, 16, generator=gen)


# (batch, heads, kv, query_pos, key_pos, kwargs): windows shorter and longer than T, left
# padding, GQA, query_rows subsets (columns still over every row), decode, sink logits
CASES = {
    "short-window": (1, 2, 1, 40, 40, dict(sliding_window=7, band=(2, 12))),
    "window-longer-than-T": (1, 2, 2, 30, 30, dict(sliding_window=45, band=(3, 50))),
    "window-padded-gqa": (2, 6, 2, 37, 37, dict(sliding_window=9, band=(0, 20), key_padding_mask=torch.arange(37)[None] >= torch.tensor([[0], [11]]))),
    "window-rows-subset": (1, 3, 1, 33, 33, dict(sliding_window=5, band=(1, 8), query_rows=torch.tensor([30, 4, 4, 17]))),
    "decode": (2, 4, 2, 6, 50, dict(sliding_window=20, band=(0, 30), key_padding_mask=torch.arange(50)[None] >= torch.tensor([[3], [0]]))),
    "window-sink-logits": (1, 3, 1, 41, 41, dict(sliding_window=13, band=(5, 25), sink_logits=torch.tensor([-1.0, 2.0, 5.0]))),
    "bidirectional-window": (1, 2, 1, 25, 25, dict(sliding_window=6, causal=False, band=(-8, 8))),
    "causal-negative-band": (1, 2, 1, 25, 25, dict(band=(-5, 3))),
}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_column_means_average_over_the_queries_that_see_the_key(name: str, backend: str) -> None:
    batch, heads, kv, n_q, t, kwargs = CASES[name]
    q, k = _inputs(batch, heads, kv, n_q, t, seed=len(name))
    want_recv_mean, want_band = brute_force_columns(q, k, scale=0.25, **kwargs)
    got = attention_stats(q, k, scale=0.25, backend=backend, chunk_size=None if backend == "reference" else 8, **kwargs)
    tol = dict(rtol=1e-5, atol=1e-7, equal_nan=True)
    torch.testing.assert_close(got.recv_mean.double(), want_recv_mean, **tol, msg="recv_mean")
    torch.testing.assert_close(got.band.double(), want_band, **tol, msg="band")


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_attention_in_a_window_has_known_column_means(backend: str) -> None:
    """q = 0, window W: A_ij = 1 / min(i + 1, W) on i - W < j <= i, so alpha_j is a mean of those."""
    t, w, lo, hi = 30, 6, 2, 9
    q = torch.zeros(1, 2, t, 16)
    k = torch.randn(1, 1, t, 16, generator=torch.Generator().manual_seed(3))
    got = attention_stats(q, k, scale=0.25, sliding_window=w, band=(lo, hi), backend=backend)
    recv_mean, band = [], []
    for j in range(t):
        sees = range(j, min(t, j + w))  # the queries whose window holds j
        recv_mean.append(sum(1 / min(i + 1, w) for i in sees) / len(sees))
        banded = [i for i in sees if lo <= i - j <= hi]  # lags 2..5: the window cuts the band at W - 1
        band.append(sum(1 / min(i + 1, w) for i in banded) / len(banded) if banded else math.nan)
    for name, want in (("recv_mean", recv_mean), ("band", band)):
        want_t = torch.tensor(want, dtype=torch.float64).expand(1, 2, t)
        torch.testing.assert_close(getattr(got, name).double(), want_t, rtol=1e-5, atol=1e-7, equal_nan=True, msg=name)
    # the last keys are seen by fewer than W queries: their mean is not diluted by the missing ones
    assert got.recv_mean[0, 0, -1].item() == pytest.approx(1 / w, rel=1e-5)


def test_band_outside_the_window_is_nan() -> None:
    """A band that starts at or beyond the window holds no query that may see the key: NaN."""
    q, k = _inputs(1, 2, 1, 20, 20, seed=4)
    got = attention_stats(q, k, scale=0.25, sliding_window=5, band=(5, 9), backend="torch")
    assert got.band.isnan().all()
    assert not got.recv_mean.isnan().any()


@pytest.mark.parametrize("columns", [True, False])
def test_windowed_chunks_read_only_the_keys_in_their_windows(columns: bool) -> None:
    """Each chunk of a sliding-window layer computes keys [a_first - W + 1, a_last] only: O(T W), not O(T^2)."""
    from interp.kernels._torch import tile_stats, torch_stats

    t, w = 600, 40
    q, k = _inputs(1, 2, 1, t, t, seed=5)
    kwargs = dict(scale=0.25, sliding_window=w, band=(0, 10), recent_windows=(8,))
    full = dict(
        causal=True, softcap=None, sink_tokens=1, window=10, segments=None, n_segments=None,
        key_padding_mask=None, query_rows=None, columns=columns, sink_logits=None,
    )  # fmt: skip
    problem = prepare(q, k, **full, **kwargs)
    widths: list[tuple[int, int]] = []

    def spy(**inputs):
        widths.append((inputs["vis"].shape[0], inputs["kt"].shape[-1]))  # (rows c, keys computed)
        return tile_stats(**inputs)

    torch_stats(problem, tile_fn=spy)
    assert sum(c for c, _ in widths) == t
    assert all(n_keys <= w + c - 1 for c, n_keys in widths), widths
    assert len(widths) > 1 and max(c for c, _ in widths) < t  # several chunks
    got = attention_stats(q, k, backend="torch", columns=columns, **kwargs)
    ref = attention_stats(q, k, backend="reference", columns=columns, **kwargs)
    tol = dict(rtol=2e-5, atol=2e-5, equal_nan=True)
    for name in ("lse", "entropy", "dist", "waad", "recent", "distant", "recv_mean", "band"):
        want = getattr(ref, name)
        if want is not None:
            torch.testing.assert_close(getattr(got, name).double(), want, **tol, msg=name)

"""The head atlas's pure parts: position bins, concentration, kinds, head selection, KV savings, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.atlas import AtlasConfig, classify, concentration, kv_saved, position_bins, select_heads
from interp.errors import InterpError


@pytest.mark.parametrize(("length", "n_bins"), [(8192, 16), (37, 16), (5, 3), (2, 1)])
def test_position_bins_are_log_spaced_and_cover_every_position(length, n_bins):
    bins = position_bins(length, n_bins)
    assert bins.shape == (length,) and bins[0] == 0
    assert np.all(np.diff(bins) >= 0) and np.all(np.diff(bins) <= 1)  # contiguous, every bin non-empty
    assert bins.max() + 1 <= n_bins
    if length == 8192:
        sizes = np.bincount(bins)
        assert bins.max() + 1 == 16 and sizes[-1] > 1000 * sizes[0]  # log-spaced: the last bin is the widest
        assert np.isclose(sizes[-1] / sizes[-2], 8192 ** (1 / 16), rtol=0.05)


def test_concentration_is_the_top_one_percent_share():
    g = torch.Generator().manual_seed(0)
    recv = torch.rand(3, 250, generator=g, dtype=torch.float64)
    recv[1, 17] = 100.0  # one key receives most
    recv[2, :3] = float("nan")  # padded keys: 247 real keys, top ceil(2.47) = 3
    got = concentration(recv)
    r = recv.numpy()
    want0 = np.sort(r[0])[-3:].sum() / r[0].sum()
    want2 = np.sort(r[2, 3:])[-3:].sum() / r[2, 3:].sum()
    assert np.isclose(got[0], want0, rtol=1e-6) and np.isclose(got[2], want2, rtol=1e-6)
    assert got[1] > 0.4


def test_kinds_follow_the_thresholds_in_order():
    cfg = AtlasConfig(length=64, windows=(8,), sinks=1)
    full = {
        "sink": np.array([[0.9, 0.1, 0.1, 0.1, 0.6]]),
        "prev": np.array([[0.0, 0.7, 0.1, 0.1, 0.6]]),
        "distant_8": np.array([[0.0, 0.0, 0.01, 0.5, 0.0]]),
    }
    assert classify(full, cfg).tolist() == [["sink", "previous-token", "local", "global", "sink"]]


def test_select_heads_orders_by_distant_mass_and_random_is_seeded():
    distant = np.array([[0.3, 0.1], [0.0, 0.9]])
    assert select_heads(distant, 2, "policy") == [(0, 1), (1, 0)]
    assert select_heads(distant, 1, "distant") == [(1, 1)]
    a, b = select_heads(distant, 2, "random", 1), select_heads(distant, 2, "random", 1)
    assert a == b and len(set(a)) == 2
    with pytest.raises(InterpError, match="unknown head selection"):
        select_heads(distant, 1, "best")


def test_kv_saved_counts_kv_heads_and_the_model_windows():
    # MHA, 2 layers x 2 heads, length 1000, window 96 + 4 sinks: each windowed head keeps 100 of 1000
    assert np.isclose(kv_saved([(0, 0)], 2, [0, 1], 1000, 96, 4, [None, None]), 0.9 / 4)
    # GQA: a kv head is trimmed only when both its query heads are windowed
    assert kv_saved([(0, 0)], 2, [0, 0], 1000, 96, 4, [None, None]) == 0.0
    assert np.isclose(kv_saved([(0, 0), (0, 1)], 2, [0, 0], 1000, 96, 4, [None, None]), 0.9 / 2)
    # a layer the model windows at 50 keys already keeps fewer than sinks + window: nothing saved there
    assert np.isclose(kv_saved([(1, 0), (1, 1)], 2, [0, 1], 1000, 96, 4, [None, 50]), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": 512, "windows": (64, 512)}, "below --length"),
        ({"sinks": -1}, "--sinks must be >= 0"),
        ({"windows": (64, 64)}, "distinct"),
        ({"window": 100}, "one of --windows"),
        ({"budgets": (1.5,)}, r"in \(0, 1\)"),
        ({"texts": ("  ",)}, "no texts"),
    ],
)
def test_config_refuses_bad_settings(kwargs, match):
    with pytest.raises(InterpError, match=match):
        AtlasConfig(**kwargs)

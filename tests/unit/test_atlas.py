"""The head atlas's pure parts: position bins, concentration, kinds, KV-head units and selectors, KV savings,
DuoAttention's format, LongPPL key tokens, intervals, frontiers, config errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyses.atlas import (
    SELECTORS,
    AtlasConfig,
    best_savings,
    classify,
    concentration,
    condition_row,
    decision_units,
    duo_attention_heads,
    group_max,
    key_tokens,
    kv_saved,
    position_bins,
    select_units,
    windowed_from_duo,
    windowed_from_json,
)
from interp.analyses.stats import t_interval
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


def test_kv_heads_score_the_max_of_their_query_heads_and_the_lowest_are_windowed_first():
    scores = np.array([[0.1, 0.5, 0.2, 0.0], [0.3, 0.3, 0.9, 0.05]])  # [layer, head], kv_map 0 0 1 1
    grouped = group_max(scores, [0, 0, 1, 1])
    assert grouped.tolist() == [[0.5, 0.2], [0.3, 0.9]]
    units = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert select_units(grouped, units, 2) == [(0, 1), (1, 0)]
    assert select_units(np.zeros((2, 2)), units, 3) == [(0, 0), (0, 1), (1, 0)]  # ties in (layer, kv head) order
    with pytest.raises(InterpError, match="cannot window 5 KV heads"):
        select_units(grouped, units, 5)


def test_every_selector_gives_a_kv_head_grid_and_random_is_seeded():
    m = {"profile": np.random.default_rng(0).random((3, 4)), "induction": np.zeros((3, 4)), "duplicate": np.eye(3, 4),
         "retrieval": np.ones((3, 4)), "ablation": np.arange(6.0).reshape(3, 2),
         "vnorm": np.arange(12.0).reshape(3, 4)}  # fmt: skip
    for sel in SELECTORS.values():
        assert sel.score(m, [0, 0, 1, 1], 0).shape == (3, 2), sel.name
    rand = SELECTORS["random"]
    assert np.array_equal(rand.score(m, [0, 0, 1, 1], 1), rand.score(m, [0, 0, 1, 1], 1))
    assert not np.array_equal(rand.score(m, [0, 0, 1, 1], 1), rand.score(m, [0, 0, 1, 1], 2))
    assert SELECTORS["razor"].score(m, [0, 0, 1, 1], 0).tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    # vnorm: the value-weighted distant mass, max over each KV head's query heads
    assert SELECTORS["vnorm"].score(m, [0, 0, 1, 1], 0).tolist() == [[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]]


def test_decision_units_skip_the_layers_the_model_windows():
    # Gemma 3 270M's layout: 18 layers, every 6th global, the others windowed at 512; one KV head
    windows = [None if (i + 1) % 6 == 0 else 512 for i in range(18)]
    assert decision_units(18, 1, windows, 16384) == [(5, 0), (11, 0), (17, 0)]
    assert len(decision_units(18, 1, windows, 512)) == 18  # at 512 tokens the window changes nothing
    assert len(decision_units(30, 3, [None] * 30, 8192)) == 90  # SmolLM2


def test_kv_saved_follows_the_issue_formula():
    # 2 layers x 2 KV heads, T = 1000, S + W = 100: a windowed KV head saves 1 - 100/1000 of its quarter
    assert np.isclose(kv_saved([(0, 0)], 2, 2, 1000, 96, 4, [None, None]), 0.9 / 4)
    # a layer with share s windowed saves s (1 - (S + W) / T) of its cache
    assert np.isclose(kv_saved([(0, 0), (0, 1)], 2, 2, 1000, 96, 4, [None, None]), 0.5 * 0.9)
    # the model's own windowed layer (50 keys) holds 50 either way: nothing saved there, and it counts at 50
    assert np.isclose(kv_saved([(0, 0)], 2, 2, 1000, 96, 4, [None, 50]), 900 / (2 * 1000 + 2 * 50))


def test_duo_attention_tsv_round_trips_through_numpy(tmp_path):
    units = decision_units(3, 2, [None, 512, None], 4096)
    windowed = [(0, 1), (2, 0)]
    rows = duo_attention_heads(windowed, 3, 2)
    path = tmp_path / "full_attention_heads.tsv"
    path.write_text("\n".join("\t".join(f"{v:g}" for v in r) for r in rows) + "\n")
    back = np.loadtxt(path, delimiter="\t")
    assert back.shape == (3, 2) and back.min() >= 0 and back.max() <= 1
    assert back.tolist() == [[1, 0], [1, 1], [0, 1]]
    assert windowed_from_duo(back, units, 3, 2, "tsv") == windowed
    with pytest.raises(InterpError, match="3x3 values, but the model has 3 layers x 2 KV heads"):
        windowed_from_duo(np.ones((3, 3)), units, 3, 2, "tsv")
    with pytest.raises(InterpError, match=r"outside \[0, 1\]"):
        windowed_from_duo(np.full((3, 2), 1.5), units, 3, 2, "tsv")


def test_policy_json_is_checked_and_an_older_per_query_head_policy_reads_as_kv_heads():
    units = [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(InterpError, match="JSON list"):
        windowed_from_json([[0, 1]], units, [0, 0, 1, 1], [0, 1], "p.json")
    with pytest.raises(InterpError, match="no 'windowed' list"):
        windowed_from_json({"full": []}, units, [0, 0, 1, 1], [0, 1], "p.json")
    with pytest.raises(InterpError, match="outside the model"):
        windowed_from_json({"unit": "kv_head", "windowed": [[0, 2]]}, units, [0, 0, 1, 1], [0, 1], "p.json")
    assert windowed_from_json({"unit": "kv_head", "windowed": [[1, 0]]}, units, [0, 0, 1, 1], [0, 1], "p") == [(1, 0)]
    # query heads 0 and 1 read KV head 0 of layer 0; head 2 alone does not window KV head 1
    old = {"windowed": [[0, 0], [0, 1], [0, 2]]}
    assert windowed_from_json(old, units, [0, 0, 1, 1], [0, 1], "p") == [(0, 0)]


def test_key_tokens_follow_longppl():
    full = np.array([0.5, 0.5, 2.5, 1.0, 0.1])
    short = np.array([3.0, 2.4, 5.0, 3.5, 0.1])
    # long-short difference > 2 and full-context loss < 2 (Fang et al. 2025: alpha = 2, beta = -2)
    assert key_tokens(full, short).tolist() == [True, False, False, True, False]


def test_interval_is_the_student_t_interval():
    """`interp.analyses.stats.t_interval`, the atlas's intervals: None and NaN values left out."""
    v = np.random.default_rng(3).normal(size=7)
    mean, lo, hi = t_interval(v.tolist() + [None, float("nan")])
    half = 2.447 * v.std(ddof=1) / math.sqrt(7)  # t_{0.975, 6}
    assert np.isclose(mean, v.mean()) and np.isclose(lo, v.mean() - half) and np.isclose(hi, v.mean() + half)
    assert math.isnan(t_interval([1.0])[1]) and math.isnan(t_interval([])[0])


def test_condition_rows_pool_seeds_and_the_best_saving_needs_loss_and_recall():
    base = {"nll": [[1.0, 1.0, 1.0, 1.0]], "recall": [1.0, 1.0, 1.0]}
    masks = [np.array([True, True, False, False])]
    runs = [{"nll": [[1.1, 1.3, 1.0, 1.0]], "recall": [1.0, 0.0, 1.0]},
            {"nll": [[1.0, 1.2, 2.0, 1.0]], "recall": [1.0, 1.0, 1.0]}]  # fmt: skip
    row = condition_row("random", 0.5, runs, base, masks)
    assert np.isclose(row["delta_key_loss"], np.mean([0.1, 0.3, 0.0, 0.2]))
    assert np.isclose(row["delta_loss"], np.mean([0.1, 0.3]))  # per (seed, window) means 0.4/4 and 1.2/4
    assert np.isclose(row["recall"], 5 / 6) and row["recall_lo"] < 5 / 6 < row["recall_hi"]
    front = pd.DataFrame({"selector": ["a", "a", "a", "b"], "kv_saved": [0.2, 0.4, 0.6, 0.3],
                          "delta_key_loss": [0.01, 0.04, 0.2, 0.06], "recall": [1.0, 0.9, 1.0, 1.0]})  # fmt: skip
    assert best_savings(front, 0.05, 0.95, 1.0) == {"a": 0.2, "b": 0.0}  # a at 0.4 loses recall
    assert best_savings(front, 0.05, 0.95, float("nan")) == {"a": 0.4, "b": 0.0}  # no needles: loss alone
    none = front.assign(delta_key_loss=float("nan"))
    assert all(math.isnan(v) for v in best_savings(none, 0.05, 0.95, 1.0).values())  # no key tokens: undecided, not 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": 512, "windows": (64, 512)}, "below --length"),
        ({"sinks": -1}, "--sinks must be >= 0"),
        ({"windows": (64, 64)}, "distinct"),
        ({"window": 100}, "one of --windows"),
        ({"budgets": (1.5,)}, "beyond the KV heads"),
        ({"selectors": ("profile", "duo")}, "unknown or repeated selector"),
        ({"selectors": ("random",), "seeds": 0}, "needs --seeds 1"),
        ({"texts": ("  ",)}, "no texts"),
    ],
)
def test_config_refuses_bad_settings(kwargs, match):
    with pytest.raises(InterpError, match=match):
        AtlasConfig(**kwargs)

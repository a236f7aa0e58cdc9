"""Patching results shaped like the model (issue 27): the sweeps return a `PatchTable`, not a
flat [n] tensor, and its grid cell (layer, head[, position]) is the single-head patch of that
head computed independently, one forward each, through `interp.hooks.patch_head`."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import random_pair

from interp.analyses.patching import PatchResult, PatchTable, logit_diff, target_index
from interp.errors import InterpError
from interp.experiments.patching import activation_patching, attribution_patching, patch_task
from interp.hooks import capture, intervene, patch_head
from interp.models import wrap_model


@pytest.fixture(scope="module")
def lm():
    """A tiny random GQA Llama (6 query heads over 2 kv heads, 3 layers) in float64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(5)
    cfg = LlamaConfig(
        vocab_size=89, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, attn_implementation="sdpa",
    )  # fmt: skip
    return wrap_model(LlamaForCausalLM(cfg).eval().double(), None, name="tiny-gqa")


@pytest.fixture(scope="module")
def pair():
    return random_pair(89, 3, 9, [2, 6], seed=2, spread=80)


def _ld(b):
    return lambda logits: logit_diff(logits, b.correct, b.wrong)


def _mean_ld(lm, b, tokens, edits=()) -> float:
    with intervene(lm, list(edits)):
        return float(logit_diff(lm.forward(tokens), b.correct, b.wrong).double().mean())


def _one_head(lm, b, layer, head, pos=None) -> float:
    """The corrupted run with one head's output (z) taken from the clean run: one forward."""
    with capture(lm, layers=[layer], keep=("z",)) as cap:
        lm.forward(b.clean)
    return _mean_ld(lm, b, b.corrupt, [patch_head(layer, head, cap["z", layer][:, head], pos=pos)])


def test_head_sweep_grid_cell_is_the_single_head_patch(lm, pair):
    site, index, *_ = target_index(lm.arch, "head_out", pair.n_pos, by_pos=False)
    table = activation_patching(lm, pair.clean, pair.corrupt, site, index, _ld(pair), batch_rows=9, progress=False)
    assert isinstance(table, PatchTable) and not isinstance(table, torch.Tensor)  # the old return was a flat tensor
    grid = table.to_grid()
    assert grid.shape == (3, 6) and np.isfinite(grid).all()
    clean, corrupt = _mean_ld(lm, pair, pair.clean), _mean_ld(lm, pair, pair.corrupt)
    for layer, head in [(0, 0), (1, 4), (2, 5), (2, 1)]:
        want = _one_head(lm, pair, layer, head)
        assert grid[layer, head] == pytest.approx(want, abs=1e-7), (layer, head)
        assert table.to_grid(normalised=True)[layer, head] == pytest.approx(
            (want - corrupt) / (clean - corrupt), abs=1e-6
        )
    df = table.to_dataframe()
    assert list(df.columns) == ["layer", "head", "score", "normalised"]  # no position column: all positions
    row = df[(df["layer"] == 1) & (df["head"] == 4)]
    assert float(row["score"].iloc[0]) == pytest.approx(grid[1, 4])
    top = table.top(3)
    want_top = np.sort(np.abs((grid - corrupt) / (clean - corrupt)).ravel())[::-1][:3]
    np.testing.assert_allclose(top["normalised"].abs().to_numpy(), want_top, atol=1e-9)


def test_position_sweep_grid_is_layer_head_position(lm, pair):
    site, index, *_ = target_index(lm.arch, "head_out", pair.n_pos, by_pos=True, layers=[1])
    table = activation_patching(lm, pair.clean, pair.corrupt, site, index, _ld(pair), batch_rows=12, progress=False)
    grid = table.to_grid()
    assert grid.shape == (3, 6, 9)  # [layer, head, position]; layers not patched are NaN
    assert np.isnan(grid[0]).all() and np.isfinite(grid[1]).all()
    for head, pos in [(0, 2), (3, 6), (5, 8)]:
        assert grid[1, head, pos] == pytest.approx(_one_head(lm, pair, 1, head, pos=pos), abs=1e-7), (head, pos)
    unpatched = _mean_ld(lm, pair, pair.corrupt)
    assert grid[1, 2, 0] == pytest.approx(unpatched, abs=1e-7)  # position 0 is equal in both runs: a no-op
    df = table.to_dataframe()
    assert list(df.columns) == ["layer", "head", "position", "score", "normalised"]
    assert len(df) == 6 * 9 and df["position"].notna().all()


def test_attribution_table_normalises_the_estimated_effect(lm, pair):
    site, index, *_ = target_index(lm.arch, "head_out", pair.n_pos, by_pos=False)
    table = attribution_patching(lm, pair.clean, pair.corrupt, site, index, _ld(pair))
    clean, corrupt = _mean_ld(lm, pair, pair.clean), _mean_ld(lm, pair, pair.corrupt)
    assert table.effect and table.clean == pytest.approx(clean) and table.corrupt == pytest.approx(corrupt)
    np.testing.assert_allclose(table.normalised, table.values.numpy() / (clean - corrupt), rtol=1e-9)


def test_residual_table_has_no_head_and_mixed_patches_refuse_a_grid(lm, pair):
    site, index, *_ = target_index(lm.arch, "resid_pre", pair.n_pos, by_pos=True, layers=[2])
    table = activation_patching(lm, pair.clean, pair.corrupt, site, index, _ld(pair), progress=False)
    assert table.to_grid().shape == (3, 9) and table.to_dataframe()["head"].isna().all()
    mixed = PatchTable(
        "z", torch.tensor([[0, 1, -1], [0, 1, 3]]), torch.zeros(2, dtype=torch.float64), 1.0, 0.0, (1, 2, 5)
    )
    with pytest.raises(InterpError, match="mix all positions with single positions"):
        mixed.to_grid()


def test_patch_task_result_grid_and_normalised_column(lm, pair):
    result = patch_task(lm, pair, target="head_out", metric="logit_diff", by_pos=False, progress=False)
    assert isinstance(result, PatchResult)
    grid = result.to_grid()
    clean, corrupt = _mean_ld(lm, pair, pair.clean), _mean_ld(lm, pair, pair.corrupt)
    want = _one_head(lm, pair, 2, 3)
    assert grid.shape == (3, 6) and grid[2, 3] == pytest.approx(want, abs=1e-7)
    df = result.to_dataframe()
    assert {"layer", "head", "position", "score", "normalised"} <= set(df.columns)
    row = df[(df["layer"] == 2) & (df["head"] == 3)]
    assert float(row["normalised"].iloc[0]) == pytest.approx((want - corrupt) / (clean - corrupt), abs=1e-6)
    back = PatchResult.from_dataframe(pd.read_csv(io.StringIO(df.to_csv(index=False))), result.meta())
    np.testing.assert_allclose(back.to_grid(normalised=True), result.to_grid(normalised=True), atol=1e-9)
    assert result.top(1, by="score")["score"].abs().iloc[0] == pytest.approx(np.nanmax(np.abs(grid)))
    effect = np.nanmax(np.abs((grid - corrupt) / (clean - corrupt)))  # the default ranks by the effect
    assert result.top(1)["normalised"].abs().iloc[0] == pytest.approx(effect, abs=1e-6)


@pytest.mark.parametrize(
    "site, row, match",
    [
        ("z", [1, 6, -1], r"head 6 out of range for site 'z' \(heads 0-5, or -1 for all\)"),
        ("q", [1, 6, 0], r"head 6 out of range for site 'q' \(heads 0-5, or -1 for all\)"),
        ("z", [1, 0, 9], r"position 9 out of range \(the prompts have 9 positions: 0-8, or -1 for all\)"),
        ("z", [1, -2, 0], r"head -2 out of range"),
        # k and v index kv heads: head 2 of 2 kv heads was an IndexError inside the sweep
        ("k", [1, 2, -1], r"head 2 out of range for site 'k' \(kv heads 0-1, or -1 for all\)"),
        ("v", [1, 2, 0], r"head 2 out of range for site 'v' \(kv heads 0-1, or -1 for all\)"),
    ],
)
def test_an_index_outside_the_model_or_prompts_is_one_line_before_any_pass(lm, pair, site, row, match):
    """Was: IndexError from inside the sweep after the clean and corrupted passes."""
    ran = []
    handle = lm.hf_model.register_forward_hook(lambda *a: ran.append(1))
    try:
        with pytest.raises(InterpError, match=match):
            activation_patching(lm, pair.clean, pair.corrupt, site, torch.tensor([row]), _ld(pair), progress=False)
    finally:
        handle.remove()
    assert ran == []


def test_patch_head_with_a_value_not_the_heads_slice_is_one_line(lm, pair):
    with capture(lm, layers=[1], keep=("z",)) as cap:
        lm.forward(pair.clean)
    z = cap["z", 1]  # [batch, head, pos, d_head]: the whole site, not head 2's slice
    with pytest.raises(InterpError, match=r"patch_head\(1, 2\): value \(3, 6, 9, 8\) is not head 2's z slice"):
        with intervene(lm, [patch_head(1, 2, z)]):  # was: RuntimeError from expand inside the forward
            lm.forward(pair.corrupt)
    with pytest.raises(
        InterpError, match=r"value \(3, 9, 5\) is not head 2's z slice \[batch, pos, d_head\] \(3, 9, 8\)"
    ):
        with intervene(lm, [patch_head(1, 2, z[:, 2, :, :5])]):
            lm.forward(pair.corrupt)


def test_top_refuses_a_negative_count(lm, pair):
    site, index, *_ = target_index(lm.arch, "head_out", pair.n_pos, by_pos=False, layers=[2])
    table = activation_patching(lm, pair.clean, pair.corrupt, site, index, _ld(pair), progress=False)
    assert len(table.top(0)) == 0 and len(table.top(100)) == 6
    with pytest.raises(InterpError, match="top k must be >= 0, got -1"):
        table.top(-1)  # was: pandas head(-1), every row but the last

"""Patching on synthetic tensors: metrics, setters, results tables, circuits and overlap, plots."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyses.patching import (
    Baseline,
    PatchConfig,
    PatchResult,
    circuit_overlap,
    evaluate_metric,
    head_scores,
    logit_diff,
    make_metric,
    method_correlation,
    target_index,
    top_heads,
)
from interp.datasets.tasks import TaskBatch
from interp.errors import InterpError
from interp.models import ArchInfo

ARCH = ArchInfo(n_layers=4, n_heads=6, n_kv_heads=2, d_head=8, d_model=48, n_ctx=64, scale=8**-0.5, model_type="llama")


def _batch(n=5):
    return TaskBatch.from_tokens(torch.zeros(n, 4), torch.ones(n, 4), torch.arange(n), torch.arange(n) + 1)


def test_logit_diff_and_score_and_kl():
    g = torch.Generator().manual_seed(0)
    b = _batch()
    clean, corrupt = torch.randn(5, 3, 10, generator=g), torch.randn(5, 3, 10, generator=g)
    rows = torch.arange(5)
    want = clean[rows, -1, b.correct] - clean[rows, -1, b.wrong]
    assert torch.allclose(logit_diff(clean, b.correct, b.wrong), want)
    assert torch.allclose(logit_diff(clean[:, -1], b.correct, b.wrong), want)  # [batch, vocab] too
    score = make_metric("score", b, clean, corrupt)
    assert float(score(clean).mean()) == pytest.approx(1.0)
    assert float(score(corrupt).mean()) == pytest.approx(0.0, abs=1e-6)
    kl = make_metric("kl", b, clean, corrupt)
    assert torch.allclose(kl(clean), torch.zeros(5), atol=1e-6)
    p, q = torch.softmax(clean[:, -1].double(), -1), torch.softmax(corrupt[:, -1].double(), -1)
    assert torch.allclose(kl(corrupt).double(), (p * (p / q).log()).sum(-1), atol=1e-5)
    with pytest.raises(InterpError, match="same mean logit difference"):
        make_metric("score", b, clean, clean)
    with pytest.raises(InterpError, match="unknown metric"):
        make_metric("accuracy", b, clean, corrupt)


def test_metric_must_be_one_scalar_per_prompt():
    logits = torch.randn(3, 1, 7)
    assert evaluate_metric(lambda x: x[:, -1, 0], logits, 3).shape == (3,)
    for bad in (lambda x: x[:, -1], lambda x: x[:, -1, 0].mean(), lambda x: x[:2, -1, 0]):
        with pytest.raises(InterpError, match="one scalar per prompt"):
            evaluate_metric(bad, logits, 3)


@pytest.mark.parametrize(
    "target,by_pos,rows,axes",
    [
        ("head_out", None, 4 * 6, ("layer", "head")),
        ("head_out", True, 4 * 6 * 5, ("layer", "head", "pos")),
        ("k", True, 4 * 2 * 5, ("layer", "head", "pos")),  # per kv head
        ("v", None, 4 * 2, ("layer", "head")),
        ("resid_pre", None, 4 * 5, ("layer", "pos")),
        ("mlp_out", False, 4, ("layer",)),
    ],
)
def test_target_index(target, by_pos, rows, axes):
    site, index, got_axes, shape, head_axis = target_index(ARCH, target, 5, by_pos=by_pos)
    assert len(index) == rows and got_axes == axes
    assert len(shape) == len(axes)
    assert len({tuple(r) for r in index.tolist()}) == rows  # no duplicate patches
    if "head" not in axes:
        assert (index[:, 1] == -1).all()
    assert (head_axis == "kv_head") == (target in ("k", "v"))


def test_target_index_errors():
    with pytest.raises(InterpError, match="unknown target 'pattern'"):
        target_index(ARCH, "pattern", 5)
    with pytest.raises(InterpError, match="out of range"):
        target_index(ARCH, "q", 5, layers=[4])
    with pytest.raises(InterpError, match="unknown method"):
        PatchConfig(method="gradient").validate()
    with pytest.raises(InterpError, match="unknown target"):
        PatchConfig(target="heads").validate()
    with pytest.raises(InterpError, match='task "pairs" needs a pairs file'):
        PatchConfig(task="pairs").validate()
    with pytest.raises(InterpError, match='set task to "pairs"'):
        PatchConfig(task="ioi", pairs="mine.jsonl").validate()
    PatchConfig(task="pairs", pairs="mine.jsonl", n=0).validate()  # n is not used with a pairs file


def _result(scores, axes, task="ioi", pos_labels=()):
    base = Baseline(
        n=4, clean_accuracy=1.0, clean_top1=0.5, corrupt_accuracy=0.25, clean_logit_diff=3.0, corrupt_logit_diff=0.1
    )
    return PatchResult(
        task=task,
        target="head_out" if "head" in axes else "resid_pre",
        method="activation",
        metric="score",
        axes=axes,
        scores=np.asarray(scores, dtype=float),
        baseline=base,
        pos_labels=pos_labels,
        model="m",
        head_axis="head" if "head" in axes else None,
    )


def test_dataframe_round_trip_with_empty_head_and_pos():
    rng = np.random.default_rng(0)
    resid = _result(rng.normal(size=(3, 4)), ("layer", "pos"), pos_labels=("a", "b", "c", "d"))
    resid.scores[1] = np.nan  # a layer not patched
    df = resid.to_dataframe()
    assert list(df.columns) == ["layer", "head", "position", "pos_label", "score", "normalised"]
    assert len(df) == 8 and df["head"].isna().all() and list(df["pos_label"][:4]) == ["a", "b", "c", "d"]
    text = df.to_csv(index=False)
    assert text.splitlines()[1].startswith("0,,0,a,")  # empty head cell in patch.csv
    back = PatchResult.from_dataframe(pd.read_csv(io.StringIO(text)), resid.meta())
    np.testing.assert_allclose(back.scores, resid.scores)
    assert back.baseline == resid.baseline and back.axes == resid.axes
    heads = _result(rng.normal(size=(2, 3)), ("layer", "head"))
    assert heads.to_dataframe()["position"].isna().all()
    with pytest.raises(InterpError, match="do not match"):
        PatchResult.from_dataframe(heads.to_dataframe(), {**heads.meta(), "shape": [1, 1]})


def test_head_scores_and_top_heads():
    s = np.zeros((3, 4, 5))
    s[1, 2, 3] = -0.9  # strongest, negative
    s[2, 0, 1] = 0.5
    s[0, 3, 4] = 0.2
    r = _result(s, ("layer", "head", "pos"))
    hs = head_scores(r)
    assert hs.shape == (3, 4) and hs[1, 2] == -0.9 and hs[2, 0] == 0.5
    assert [(a, b) for a, b, _ in top_heads(r, 2)] == [(1, 2), (2, 0)]
    assert [(a, b) for a, b, _ in top_heads(r, 2, signed=True)] == [(2, 0), (0, 3)]
    with pytest.raises(InterpError, match="no head axis"):
        head_scores(_result(np.zeros((3, 5)), ("layer", "pos")))


def test_circuit_overlap():
    a = np.zeros((4, 5))
    b = np.zeros((4, 5))
    for i, (layer, head) in enumerate([(0, 1), (1, 1), (2, 2), (3, 4)]):
        a[layer, head] = 1 - 0.1 * i
    for i, (layer, head) in enumerate([(1, 1), (3, 4), (0, 0), (2, 3)]):
        b[layer, head] = -(1 - 0.1 * i)  # sign does not matter for circuit membership
    ov = circuit_overlap(_result(a, ("layer", "head")), _result(b, ("layer", "head"), task="colored-objects"), top=4)
    assert set(ov.shared) == {(1, 1), (3, 4)}
    assert ov.share == pytest.approx(2 / 4) and ov.jaccard == pytest.approx(2 / 6)
    df = ov.to_dataframe()
    assert df["shared"].sum() == 2 and len(df) == 6
    with pytest.raises(InterpError, match="different layer x head grids"):
        circuit_overlap(_result(a, ("layer", "head")), _result(np.zeros((4, 6)), ("layer", "head")))


def test_method_correlation_ignores_missing_cells():
    x = np.arange(12.0).reshape(3, 4)
    y = 2 * x + 1
    y[0, 0] = np.nan
    assert method_correlation(_result(x, ("layer", "head")), _result(y, ("layer", "head"))) == pytest.approx(1.0)
    assert np.isnan(method_correlation(_result(x, ("layer", "head")), _result(np.ones((3, 4)), ("layer", "head"))))


def test_plots_draw_the_scores():
    from interp.plots.patching import figures_html, overlap_figure, patch_figure, position_heatmap

    rng = np.random.default_rng(1)
    r = _result(rng.normal(size=(3, 4)), ("layer", "head"))
    fig = patch_figure(r)
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), r.scores)
    with pytest.raises(InterpError, match="no position axis"):
        position_heatmap(r)
    byp = _result(rng.normal(size=(3, 4, 5)), ("layer", "head", "pos"), pos_labels=tuple("abcde"))
    grid = np.asarray(position_heatmap(byp).data[0].z, dtype=float)
    assert grid.shape == (3, 5)
    np.testing.assert_allclose(np.abs(grid), np.abs(byp.scores).max(axis=1))
    ov = circuit_overlap(r, r, top=3)
    assert ov.share == 1.0
    html = figures_html([fig, overlap_figure(ov, r.scores, r.scores)])
    assert html.count("Plotly.newPlot") == 2  # both figures, plotly.js embedded once:
    assert len(html) < 1.5 * len(fig.to_html(include_plotlyjs=True))


def test_parse_layers():
    from interp.experiments.flags import parse_layers

    assert parse_layers("0-2,7") == (0, 1, 2, 7)
    assert parse_layers(None) is None
    with pytest.raises(InterpError, match="--layers"):
        parse_layers("a-b")


# --------------------------------------------------------------------------------------------
# the pure steps of a sweep (interp.analyses.patching.plan / results), on synthetic tensors
# --------------------------------------------------------------------------------------------


def test_config_is_validated_when_built_and_serialises_its_settings():
    cfg = PatchConfig(task="pairs", pairs="mine.jsonl", n=3, layers=(3, 1), position_map=True)
    assert cfg.layers == (3, 1)
    s = cfg.settings()
    assert s["layers"] == [3, 1] and s["pairs"] == "mine.jsonl" and s["position_map"] is True
    assert "progress" not in s  # progress bars are the runner's, not a setting
    for bad, message in [
        ({"task": "ioi2"}, "unknown task 'ioi2'"),
        ({"metric": "acc"}, "unknown metric"),
        ({"batch_rows": 0}, "batch_rows = 0"),
        ({"n": 0}, "at least one prompt"),
        ({"layers": ()}, "no layers"),
    ]:
        with pytest.raises(InterpError, match=message):
            PatchConfig(**bad)


def test_first_difference_finds_the_first_changed_position():
    from interp.analyses.patching import first_difference

    g = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 3, 6, 4, generator=g)  # [batch, head, pos, d_head]
    corrupt = clean.clone()
    corrupt[1, 2, 4] += 1.0  # head 2 differs at position 4 in one prompt
    assert first_difference(clean, corrupt, 2, -1, True) == 4
    assert first_difference(clean, corrupt, 0, -1, True) == 6  # head 0 copies only equal values: a no-op
    assert first_difference(clean, corrupt, -1, -1, True) == 4
    assert first_difference(clean, corrupt, 2, 4, True) == 4 and first_difference(clean, corrupt, 2, 3, True) == 6
    resid_clean, resid_corrupt = clean[:, 0], clean[:, 0].clone()  # [batch, pos, d_model]
    resid_corrupt[0, 1, 0] = 7.0
    assert first_difference(resid_clean, resid_corrupt, -1, -1, False) == 1
    assert first_difference(resid_clean, resid_corrupt, -1, 5, False) == 6


def test_plan_passes_covers_every_patch_once_in_position_order():
    from interp.analyses.patching import plan_passes

    pos = torch.tensor([5, 0, 3, 3, 0, 5, 1])
    full = plan_passes(pos, 3, n=2, n_pos=8, reuse=False)
    assert [len(p) for p in full] == [3, 3, 1]  # without reuse every pass is full
    order = torch.cat(full).tolist()
    assert sorted(order) == list(range(7))
    assert [int(pos[i]) for i in order] == sorted(pos.tolist())  # in order of first changed position
    # with reuse a pass closes at a change of position once it holds min_tokens of work
    # (2 prompts x 8 positions = 32 tokens close the position-0 pass; patch 6 alone at position 1
    # holds 14 < 16, so patches 2 and 3 at position 3 join it)
    reuse = plan_passes(pos, 10, n=2, n_pos=8, reuse=True, min_tokens=16)
    assert [p.tolist() for p in reuse] == [[1, 4], [6, 2, 3], [0, 5]]
    layered = plan_passes(
        torch.zeros(4, dtype=torch.long), 10, n=2, n_pos=8, reuse=False, layer=torch.tensor([2, 1, 2, 1]), min_tokens=16
    )
    assert [p.tolist() for p in layered] == [[1, 3], [0, 2]]  # layer skipping: passes split by lowest layer


def test_patch_mask_marks_each_copys_entries():
    from interp.analyses.patching import patch_mask

    shape = (3 * 2, 4, 5, 8)  # 3 copies x 2 prompts, 4 heads, 5 positions, d_head 8
    mask = patch_mask([(0, 1, 2, -1), (2, 1, -1, 3)], shape, 2, True)
    assert mask.shape == shape[:-1]
    assert mask[0:2, 2].all() and int(mask[0:2].sum()) == 2 * 5  # copy 0: head 2, every position
    assert not mask[2:4].any()  # copy 1 patches another layer
    assert mask[4:6, :, 3].all() and int(mask[4:6].sum()) == 2 * 4  # copy 2: every head at position 3
    resid = patch_mask([(1, 0, -1, 2)], (4, 5, 16), 2, False)
    assert resid[2:4, 2].all() and int(resid.sum()) == 2


def test_attribution_estimates_contract_difference_with_gradient():
    from interp.analyses.patching import attribution_estimates

    g = torch.Generator().manual_seed(2)
    clean = {0: torch.randn(2, 3, 4, 5, generator=g)}
    corrupt = {0: torch.randn(2, 3, 4, 5, generator=g)}
    grad = {0: torch.randn(2, 3, 4, 5, generator=g)}
    index = torch.tensor([(0, 1, -1), (0, -1, 2), (0, 2, 3), (0, -1, -1)])
    got = attribution_estimates(index, clean, corrupt, grad, True)
    prod = ((clean[0] - corrupt[0]) * grad[0]).double()
    want = [prod[:, 1].sum(), prod[:, :, 2].sum(), prod[:, 2, 3].sum(), prod.sum()]
    assert got.numpy() == pytest.approx(torch.stack(want).numpy(), rel=1e-6)  # summed in float32
    assert attribution_estimates(index[:1], clean, corrupt, {0: None}, True).item() == 0.0  # unused site


def test_baseline_and_dense_scores():
    from interp.analyses.patching import baseline_of, dense_scores

    clean = torch.zeros(4, 1, 6)
    corrupt = torch.zeros(4, 1, 6)
    correct, wrong = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])
    clean[torch.arange(4), 0, correct] = torch.tensor([2.0, 3.0, -1.0, 4.0])  # LD 2, 3, -1, 4
    clean[3, 0, 4] = 9.0  # prompt 3: another token is top-1
    corrupt[torch.arange(4), 0, wrong] = 1.0  # LD -1 everywhere
    b = baseline_of(clean, corrupt, correct, wrong)
    assert b.n == 4 and b.clean_accuracy == 0.75 and b.clean_top1 == 0.5 and b.corrupt_accuracy == 0.0
    assert b.clean_logit_diff == pytest.approx(2.0) and b.corrupt_logit_diff == pytest.approx(-1.0)
    assert b.summary()["clean_top1"] == 0.5
    index = torch.tensor([(1, 2, -1), (0, 0, -1)])
    grid = dense_scores(index, torch.tensor([0.5, -0.25]), ("layer", "head"), (3, 4))
    assert grid[1, 2] == 0.5 and grid[0, 0] == -0.25 and int(np.isfinite(grid).sum()) == 2


def test_summary_and_description_of_a_result():
    from interp.experiments.patching.command import describe, report_figures, tables

    s = np.zeros((3, 4))
    s[2, 1], s[1, 3] = 0.8, -0.4
    heads = _result(s, ("layer", "head"))
    resid = _result(np.arange(12.0).reshape(3, 4) / 10, ("layer", "pos"), pos_labels=("a", "b", "c", "end"))
    summary = heads.summary()
    assert summary["task"] == "ioi" and summary["clean_accuracy"] == 1.0
    assert summary["top_heads"][0] == {"layer": 2, "head": 1, "score": 0.8} and resid.summary()["top_heads"] is None
    from dataclasses import replace

    both = replace(heads, position_map=resid)
    text = describe(both)
    assert text.startswith(
        "IOI on 4 prompts (Wang et al. 2022): the model prefers the right name on 100% of clean prompts"
    )
    assert "L2H1 (+0.80), L1H3 (-0.40)" in text
    assert "the strongest patch is layer 2 at 'end' (+1.10)." in text
    assert set(tables(both)) == {"heads", "resid_pre"} and list(report_figures(both)) == [
        "head_out_grid",
        "resid_pre_by_position",
    ]

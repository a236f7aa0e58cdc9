"""Patching on synthetic tensors: metrics, setters, results tables, circuits and overlap, plots."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyses.patching import (
    Baseline,
    PatchConfig,
    PatchResult,
    _evaluate,
    circuit_overlap,
    head_scores,
    logit_diff,
    make_metric,
    method_correlation,
    target_index,
    top_heads,
)
from interp.analyses.tasks import TaskBatch
from interp.errors import InterpError
from interp.models import ArchInfo

ARCH = ArchInfo(n_layers=4, n_heads=6, n_kv_heads=2, d_head=8, d_model=48, n_ctx=64, scale=8**-0.5, model_type="llama")
LM = SimpleNamespace(arch=ARCH)


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
    assert _evaluate(lambda x: x[:, -1, 0], logits, 3).shape == (3,)
    for bad in (lambda x: x[:, -1], lambda x: x[:, -1, 0].mean(), lambda x: x[:2, -1, 0]):
        with pytest.raises(InterpError, match="one scalar per prompt"):
            _evaluate(bad, logits, 3)


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
    site, index, got_axes, shape, head_axis = target_index(LM, target, 5, by_pos=by_pos)
    assert len(index) == rows and got_axes == axes
    assert len(shape) == len(axes)
    assert len({tuple(r) for r in index.tolist()}) == rows  # no duplicate patches
    if "head" not in axes:
        assert (index[:, 1] == -1).all()
    assert (head_axis == "kv_head") == (target in ("k", "v"))


def test_target_index_errors():
    with pytest.raises(InterpError, match="unknown target 'pattern'"):
        target_index(LM, "pattern", 5)
    with pytest.raises(InterpError, match="out of range"):
        target_index(LM, "q", 5, layers=[4])
    with pytest.raises(InterpError, match="unknown method"):
        PatchConfig(method="gradient").validate()
    with pytest.raises(InterpError, match="unknown target"):
        PatchConfig(target="heads").validate()
    with pytest.raises(InterpError, match='task "pairs" needs a pairs file'):
        PatchConfig(task="pairs").validate()
    with pytest.raises(InterpError, match="set task to \"pairs\""):
        PatchConfig(task="ioi", pairs="mine.jsonl").validate()
    PatchConfig(task="pairs", pairs="mine.jsonl", n=0).validate()  # n is not used with a pairs file


def _result(scores, axes, task="ioi", pos_labels=()):
    base = Baseline(n=4, clean_accuracy=1.0, clean_top1=0.5, corrupt_accuracy=0.25, clean_logit_diff=3.0, corrupt_logit_diff=0.1)
    return PatchResult(
        task=task, target="head_out" if "head" in axes else "resid_pre", method="activation", metric="score",
        axes=axes, scores=np.asarray(scores, dtype=float), baseline=base, pos_labels=pos_labels, model="m",
        head_axis="head" if "head" in axes else None,
    )


def test_dataframe_round_trip_with_empty_head_and_pos():
    rng = np.random.default_rng(0)
    resid = _result(rng.normal(size=(3, 4)), ("layer", "pos"), pos_labels=("a", "b", "c", "d"))
    resid.scores[1] = np.nan  # a layer not patched
    df = resid.to_dataframe()
    assert list(df.columns) == ["layer", "head", "pos", "pos_label", "score"]
    assert len(df) == 8 and df["head"].isna().all() and list(df["pos_label"][:4]) == ["a", "b", "c", "d"]
    text = df.to_csv(index=False)
    assert text.splitlines()[1].startswith("0,,0,a,")  # empty head cell in patch.csv
    back = PatchResult.from_dataframe(pd.read_csv(io.StringIO(text)), resid.meta())
    np.testing.assert_allclose(back.scores, resid.scores)
    assert back.baseline == resid.baseline and back.axes == resid.axes
    heads = _result(rng.normal(size=(2, 3)), ("layer", "head"))
    assert heads.to_dataframe()["pos"].isna().all()
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
    from interp.commands.patching import parse_layers

    assert parse_layers("0-2,7") == (0, 1, 2, 7)
    assert parse_layers(None) is None
    with pytest.raises(InterpError, match="--layers"):
        parse_layers("a-b")

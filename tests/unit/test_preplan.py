"""Preplan and anchor analysis on synthetic tensors: pure functions, known-answer attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typecheck import unchecked_new

from interp.analyses.preplan import (
    PreplanConfig,
    PreplanResult,
    PreplanRun,
    PreplanStats,
    analyse,
    bottom_quantile,
    couple_anchors,
    default_layers,
    head_groups,
    layer_statistics,
    top_quantile,
    waad_jumps,
)
from interp.datasets.prompts import Prompt, default_prompts, load_prompts, prompts_digest
from interp.errors import InterpError

# ---------------------------------------------------------------------------------------------
# pure functions on hand-made arrays
# ---------------------------------------------------------------------------------------------


def test_default_layers_thirty_layers_by_hand():
    # [floor(30/3), floor(60/3)] = [10, 20]; 5 points 10, 12.5, 15, 17.5, 20, halves rounded up
    assert default_layers(30) == [10, 13, 15, 18, 20]


def test_default_layers_lie_in_middle_third():
    for n_layers in range(1, 130):
        got = default_layers(n_layers)
        lo, hi = n_layers // 3, (2 * n_layers) // 3
        assert got == sorted(set(got)), n_layers
        assert got[0] == lo and got[-1] == hi, n_layers
        assert len(got) == min(5, hi - lo + 1), n_layers
        steps = np.diff(got)
        assert len(got) < 5 or steps.max() - steps.min() <= 1, n_layers  # evenly spaced up to rounding


def test_quantile_masks_on_hand_arrays():
    v = np.array([5.0, 0.0, 9.0, 1.0, np.nan, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0])
    # finite values are 0..9: the top 40% are 6, 7, 8, 9 and the bottom 30% are 0, 1, 2
    assert set(v[top_quantile(v, 0.4)]) == {6.0, 7.0, 8.0, 9.0}
    assert set(v[bottom_quantile(v, 0.3)]) == {0.0, 1.0, 2.0}
    assert not top_quantile(v, 0.4)[4] and not bottom_quantile(v, 0.99)[4]  # NaN never marked
    assert not top_quantile(np.full(4, np.nan), 0.5).any()


def test_head_groups_split_spans_and_refuse_ties():
    span = np.array([[4.0, 1.0, 30.0], [2.0, 50.0, 9.0], [3.0, 20.0, 40.0]])
    local, global_ = head_groups(span, 0.3, 0.3)
    assert set(span[local]) == {1.0, 2.0, 3.0}
    assert set(span[global_]) == {30.0, 40.0, 50.0}
    with pytest.raises(InterpError, match="both local and global"):
        head_groups(np.ones((2, 3)), 0.3, 0.3)


def test_waad_jumps_by_hand():
    d = waad_jumps(np.array([1.0, 3.0, 2.5, 2.5]))
    np.testing.assert_allclose(d[:3], [2.0, 0.5, 0.0])
    assert np.isnan(d[3])


def test_couple_anchors_by_hand():
    n = 10
    preplan = np.zeros(n, bool)
    preplan[[2, 3]] = True
    anchor = np.zeros(n, bool)
    anchor[[0, 4, 5, 7, 9]] = True
    waad = np.full(n, 1.0)
    waad[5] = 5.0  # anchor 5 is not locally dominated: its WAAD is above tau
    dominated, link = couple_anchors(anchor, preplan, waad, tau_waad=2.0, k=3)
    # anchor 0: nothing before; 4: preplan 3 (nearest) within 3; 5: WAAD too high;
    # 7: preplans 2, 3 are 5 and 4 tokens back (> k); 9: none within 3
    assert dominated.tolist() == [i == 4 for i in range(n)]
    assert link[4] == 3 and (np.delete(link, 4) == -1).all()
    d1, l1 = couple_anchors(anchor, preplan, waad, tau_waad=2.0, k=4)  # now 7 sees preplan 3
    assert d1[7] and l1[7] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"local_quantile": 0.0}, "local_quantile"),
        ({"global_quantile": 1.0}, "global_quantile"),
        ({"preplan_quantile": -0.1}, "preplan_quantile"),
        ({"anchor_quantile": 1.5}, "anchor_quantile"),
        ({"anchor_quantile": True}, "anchor_quantile"),
        ({"local_quantile": 0.6, "global_quantile": 0.6}, "both local and global"),
        ({"band": (100, 10)}, "lo=100 > hi=10"),
        ({"band": (-1, 10)}, "lo=-1"),
        ({"window": 0}, "window"),
        ({"coupling_k": 0}, "coupling_k"),
        ({"tau_waad": float("nan")}, "tau_waad"),
        ({"layers": ()}, "layers"),
        ({"backend": "cuda"}, "backend"),
        ({"prompts": ()}, "non-empty"),
        ({"prompts": (Prompt("a", "  "),)}, "prompt 'a' is empty"),
        ({"prompts": (Prompt("a", "q", " "),)}, "response of prompt 'a' is empty"),
        ({"prompts": (Prompt("a", "q"), Prompt("a", "r"))}, "share an id"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(InterpError, match=match):
        unchecked_new(PreplanConfig, **kwargs)  # what a user's process (no test-time type checker) sees


def test_config_is_frozen_and_normalises():
    cfg = unchecked_new(PreplanConfig, layers=(5, 3, 3), band=[2, 7])  # a user's list, normalised
    assert cfg.layers == (3, 5) and cfg.band == (2, 7)
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):  # not any exception: the dataclass is frozen
        cfg.window = 3  # type: ignore[misc]


def test_shipped_prompts_and_prompt_file(tmp_path):
    rows = default_prompts()
    assert len(rows) >= 3 and all(r.prompt.strip() for r in rows)
    assert len({r.id for r in rows}) == len(rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(InterpError, match="line 2"):
        load_prompts(bad)
    with pytest.raises(InterpError, match="cannot read prompt file"):
        load_prompts(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------------------------
# known-answer attention through the kernel
# ---------------------------------------------------------------------------------------------

T, P, W, LO, HI = 48, 16, 10, 10, 100


def _top_count(n: int, q: float) -> int:
    """How many of n distinct values lie at or above their linear-interpolated (1-q)-quantile:
    the quantile sits at sorted index (1-q)(n-1), so n - ceil((1-q)(n-1)) values do."""
    return n - math.ceil((1 - q) * (n - 1) - 1e-9)


def _synthetic_qk():
    """Head 0 has q = 0 (uniform attention); head 1 attends only to the previous token.

    k_j = e_j (one-hot, d_head = T, one kv head shared by both query heads); q_i of head 1 is
    60 e_{i-1}, so s_{i,i-1} = 60 and every other score is 0 (row 0 sees only itself).
    """
    k = torch.eye(T, dtype=torch.float32)[None, None]
    q = torch.zeros(1, 2, T, T)
    q[0, 1, 1:, :] = 60.0 * torch.eye(T)[:-1]  # row i (>= 1) points at key i - 1
    return q, k


def _uniform_closed_form():
    """dist, waad of response rows and band of response keys for uniform causal attention."""
    a = np.arange(P, T)  # absolute positions of the response rows
    dist = a / 2.0  # mean of 0..a
    waad = np.array([sum(min(d, W) for d in range(x + 1)) / (x + 1) for x in a])
    band = []
    for s in range(P, T):
        rows = range(s + LO, min(T - 1, s + HI) + 1)
        band.append(np.mean([1.0 / (i + 1) for i in rows]) if len(rows) else np.nan)
    return dist, waad, np.array(band)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_layer_statistics_known_answers(backend):
    q, k = _synthetic_qk()
    cfg = PreplanConfig(window=W, band=(LO, HI), backend=backend)
    dist, waad, band = layer_statistics(q, k, attention={"scale": 1.0}, n_prompt=P, config=cfg)
    assert dist.shape == waad.shape == band.shape == (2, T - P)
    d0, w0, b0 = _uniform_closed_form()
    np.testing.assert_allclose(dist[0], d0, rtol=1e-5)
    np.testing.assert_allclose(waad[0], w0, rtol=1e-5)
    np.testing.assert_array_equal(np.isnan(band[0]), np.isnan(b0))  # last LO keys: no band query
    np.testing.assert_allclose(band[0][~np.isnan(b0)], b0[~np.isnan(b0)], rtol=1e-5)
    # previous-token head: dist = waad = 1 on every response row, nothing reaches 10+ back
    np.testing.assert_allclose(dist[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(waad[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(band[1][~np.isnan(b0)], 0.0, atol=1e-6)


def test_analyse_on_known_answer_heads():
    q, k = _synthetic_qk()
    cfg = PreplanConfig(window=W, band=(LO, HI), backend="reference")
    dist, waad, band = layer_statistics(q, k, attention={"scale": 1.0}, n_prompt=P, config=cfg)
    stats = PreplanStats(layers=(0,), dist=dist[None], waad=waad[None], band=band[None])
    found = analyse(stats, cfg)
    d0, _, b0 = _uniform_closed_form()
    np.testing.assert_allclose(found.span, [[d0.mean(), 1.0]], rtol=1e-6)
    assert found.local.tolist() == [[False, True]] and found.global_.tolist() == [[True, False]]
    np.testing.assert_allclose(found.waad, 1.0, atol=1e-6)  # WAAD = the previous-token head's
    np.testing.assert_allclose(found.fai[~np.isnan(b0)], b0[~np.isnan(b0)], rtol=1e-6)  # FAI = uniform head's
    # FAI of uniform attention falls with s: the anchors are the earliest response keys
    n_finite = int((~np.isnan(b0)).sum())
    assert found.anchor.sum() == _top_count(n_finite, 0.4)
    assert found.anchor[: found.anchor.sum()].all()


def _result_from(found, n_resp, cfg):
    return PreplanResult.found(
        found,
        config=cfg,
        model="synthetic",
        prompt="p",
        response="r",
        generated=False,
        n_prompt=P,
        tokens=tuple(f"t{i}" for i in range(n_resp)),
        token_ids=np.arange(n_resp),
        layers=(0, 1),
    )


def _random_found(seed=0, n_resp=30):
    rng = np.random.default_rng(seed)
    cfg = PreplanConfig(layers=(0, 1))
    stats = PreplanStats(
        layers=(0, 1),
        dist=rng.uniform(0, 40, (2, 6, n_resp)),
        waad=rng.uniform(0, 10, (2, 6, n_resp)),
        band=rng.uniform(0, 0.1, (2, 6, n_resp)),
    )
    stats.band[..., -LO:] = np.nan
    return stats, analyse(stats, cfg), cfg


def test_analyse_means_and_marks_match_definitions():
    stats, found, cfg = _random_found()
    span = stats.dist.mean(-1)
    assert found.local.sum() == 4 and found.global_.sum() == 4  # 30% of 12 heads, no ties
    assert span[found.local].max() < span[~found.local].min()
    assert span[found.global_].min() > span[~found.global_].max()
    np.testing.assert_allclose(found.waad, stats.waad[found.local].mean(0))
    np.testing.assert_allclose(found.fai, stats.band[found.global_].mean(0))
    assert np.isnan(found.fai[-LO:]).all() and not found.anchor[-LO:].any()
    delta = np.abs(np.diff(found.waad))
    assert found.preplan[:-1].sum() == _top_count(delta.size, 0.4)
    assert delta[found.preplan[:-1]].min() > delta[~found.preplan[:-1]].max()
    assert found.tau_waad == pytest.approx(np.median(found.waad))
    assert not (found.dominated & ~found.anchor).any()


def test_result_tables_and_page():
    from interp.plots.preplan import fai_figure, preplan_page, span_figure, waad_figure

    _, found, cfg = _random_found(seed=1)
    res = _result_from(found, 30, cfg)
    df = res.to_dataframe()
    assert list(df.columns[:4]) == ["pos", "index", "token", "token_id"]
    assert {"waad", "fai", "preplan", "anchor", "dominated", "preplan_link"} <= set(df.columns)
    assert df.pos.tolist() == list(range(P, P + 30))
    linked = df[df.dominated]
    assert (linked.preplan_link >= P).all() and df.loc[linked.preplan_link - P, "preplan"].all()
    heads = res.heads_dataframe()
    assert len(heads) == 12 and heads.group.value_counts().to_dict() == {"other": 4, "local": 4, "global": 4}
    page = preplan_page([res], ["s1"])
    both = int((res.preplan & res.anchor).sum())
    assert page.count('class="tok preplan') == int(res.preplan.sum()) - both
    assert page.count('class="tok anchor') == int(res.anchor.sum()) - both
    assert page.count('class="tok both') == both
    assert page.count('class="tok') == 30 and page.count("<script") >= 1
    assert waad_figure(res).data[1].x == tuple(res.positions[res.preplan])
    assert fai_figure(res).data[1].x == tuple(res.positions[res.anchor])
    assert sum(len(t.x) for t in span_figure(res).data) == 12


def test_prompt_file_ids_digest_and_settings(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "one"}\n\n{"id": "x", "prompt": "two", "response": "2"}\n')
    rows = load_prompts(f)
    assert rows == (Prompt("p0", "one"), Prompt("x", "two", "2"))
    # the digest is that of the {"id", "prompt", "response"} rows earlier versions logged
    import hashlib
    import json

    old = [{"id": "p0", "prompt": "one", "response": None}, {"id": "x", "prompt": "two", "response": "2"}]
    assert prompts_digest(rows) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "prompt": "one"}\n{"id": "a", "prompt": "two"}\n')
    with pytest.raises(InterpError, match="repeats a prompt"):
        load_prompts(dup)
    cfg = unchecked_new(PreplanConfig, prompts=rows, layers=[2, 1])
    settings = cfg.settings()
    assert "prompts" not in settings and settings["layers"] == [1, 2] and settings["band"] == [10, 100]
    assert cfg.prompts == rows and unchecked_new(PreplanConfig, prompts=list(rows)).prompts == rows


def test_run_tables_put_the_sample_first():
    _, found_a, cfg = _random_found(seed=2)
    _, found_b, _ = _random_found(seed=3, n_resp=20)
    a, b = _result_from(found_a, 30, cfg), _result_from(found_b, 20, cfg)
    run = PreplanRun(config=cfg, model="synthetic", ids=("q0", "q1"), results=(a, b))
    tokens = run.to_dataframe()
    assert tokens.columns[0] == "sample" and tokens["sample"].tolist() == ["q0"] * 30 + ["q1"] * 20
    assert tokens.drop(columns="sample").iloc[30:].reset_index(drop=True).equals(b.to_dataframe())
    heads = run.heads_dataframe()
    assert len(heads) == 24 and heads.columns[0] == "sample" and heads.groupby("sample").size().tolist() == [12, 12]
    s = run.summary()["samples"]
    assert [x["id"] for x in s] == ["q0", "q1"] and s[1]["n_response_tokens"] == 20
    assert s[0]["n_anchor"] == int(a.anchor.sum())


def test_result_round_trips_through_its_record():
    _, found, cfg = _random_found(seed=4)
    res = _result_from(found, 30, cfg)
    back = PreplanResult.from_record({"id": "x", **res.to_record()}, cfg)
    assert back.tokens == res.tokens and back.layers == res.layers and back.tau_waad == res.tau_waad
    for name in ("span", "local", "waad", "fai", "preplan", "anchor", "dominated", "link", "token_ids"):
        got, want = getattr(back, name), getattr(res, name)
        assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=got.dtype.kind == "f"), name


def test_preplan_page_is_written_by_the_store(tmp_path):
    from interp.experiments import Store
    from interp.plots.preplan import preplan_page

    _, found, cfg = _random_found(seed=5)
    res = _result_from(found, 30, cfg)
    store = Store(tmp_path)
    store.write_pages({"preplan": preplan_page([res], ["s1"])})
    written = (tmp_path / "preplan.html").read_text()
    assert store.written == ["preplan.html"] and written.count('class="tok') == 30
    shared = preplan_page([res], ["s1"], include_plotlyjs="../plotly.min.js")
    assert 'src="../plotly.min.js"' in shared and len(shared) < len(written) / 10

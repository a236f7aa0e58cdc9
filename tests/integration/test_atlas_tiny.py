"""The head atlas on tiny random models: its profiles equal a float64 dense computation of the same
statistics, the runner writes its contract files, and bad input is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from families import VOCAB, build, tokenizer

from interp.analyses.atlas import AtlasConfig, combine, position_bins
from interp.errors import InterpError
from interp.experiments import Store
from interp.experiments.atlas import read_policy, run, scan_text
from interp.hooks import capture
from interp.models import wrap_model


def _dense_rows(
    q: torch.Tensor, k: torch.Tensor, scale: float, sinks: int, windows, sliding, weight: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every atlas row metric from the dense float64 attention of one layer ([head, T] each); the
    value-weighted ones from u_ij = a_ij weight[h, j] (weight = ||W_O^h v_j||)."""
    q, k = q[0].double(), k[0].double()
    k = k.repeat_interleave(q.shape[0] // k.shape[0], 0)
    t = q.shape[1]
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = j <= i
    if sliding is not None:
        allowed &= i - j < sliding
    a = torch.softmax((q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf")), -1)  # [head, T, T]
    d = (i - j).double()
    rows = {
        "first": a[:, :, 0],
        "sink": a[:, :, :sinks].sum(-1),
        "entropy": -(a * a.clamp_min(1e-300).log()).sum(-1),
        "dist": (a * d).sum(-1),
        "waad": (a * d.clamp(max=10)).sum(-1),  # the kernel's default WAAD window W = 10
        "top1p": a.max(-1).values,
        "self_mass": a.diagonal(dim1=-2, dim2=-1),
        "prev": torch.cat([torch.zeros(a.shape[0], 1, dtype=a.dtype), a.diagonal(offset=-1, dim1=-2, dim2=-1)], -1),
    }
    u = a * weight[:, None, :]
    z = u.sum(-1)
    rows |= {"w_first": u[:, :, 0] / z, "w_sink": u[:, :, :sinks].sum(-1) / z,
             "w_self_mass": u.diagonal(dim1=-2, dim2=-1) / z}  # fmt: skip
    for w in windows:
        rows[f"recent_{w}"] = (a * ((d >= 0) & (d < w))).sum(-1)
        rows[f"distant_{w}"] = (a * ((d >= w) & (j >= sinks))).sum(-1)
        rows[f"w_recent_{w}"] = (u * ((d >= 0) & (d < w))).sum(-1) / z
        rows[f"w_distant_{w}"] = (u * ((d >= w) & (j >= sinks))).sum(-1) / z
    return rows | {"recv": a.sum(1)}


def _output_norms(lm, layer: int, v: torch.Tensor) -> torch.Tensor:
    """[head, T] ||W_O^h v_j||, W_O^h = head h's d_head columns of o_proj.weight (float64)."""
    weight = lm.adapter.attention(lm, layer).o_proj.weight.detach().double()
    d = lm.arch.d_head
    heads = range(lm.arch.n_heads)
    return torch.stack(
        [(v[0, lm.arch.kv_map[h]].double() @ weight[:, h * d : (h + 1) * d].T).norm(dim=-1) for h in heads]
    )


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_profiles_equal_a_float64_dense_computation(family):
    """Two texts of 37 tokens (not a tile multiple), GQA, 2 sinks, windows 4 and 16; gemma3_text has
    sliding-window layers and a soft-cap-free local/global mix."""
    lm = wrap_model(build(family), None, name=family)
    cfg = AtlasConfig(length=37, windows=(4, 16), sinks=2, n_bins=6, causal_texts=0, backend="torch")
    layers = list(range(lm.arch.n_layers))
    texts = [torch.randint(0, VOCAB, (1, 37), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    records, dense = [], []
    for ids in texts:
        records.append(scan_text(lm, ids, cfg, layers))
        with capture(lm, keep=("q", "k", "v")) as cap:
            lm.forward(ids)
        dense.append([
            _dense_rows(cap["q", L], cap["k", L], lm.arch.scale, 2, (4, 16), lm.attention_kwargs(L)["sliding_window"],
                        _output_norms(lm, L, cap["v", L]))
            for L in layers
        ])  # fmt: skip
    windows = [lm.attention_kwargs(L)["sliding_window"] for L in layers]
    result = combine(family, cfg, layers, lm.arch.n_heads, lm.arch.kv_map, windows, records)
    bins = torch.as_tensor(position_bins(37, 6))
    n_bins = int(bins.max()) + 1
    assert result.profiles.shape == (len(layers), lm.arch.n_heads, len(result.metrics), n_bins)
    for li in range(len(layers)):
        for m, name in enumerate(result.metrics):
            both = torch.stack([d[li][name] for d in dense])  # [text, head, T]
            want = torch.stack([both[..., bins == b].mean(dim=(0, -1)) for b in range(n_bins)], -1)  # [head, bin]
            assert np.allclose(result.profiles[li, :, m], want.numpy(), atol=2e-5), (family, li, name)
        recv = torch.stack([d[li]["recv"] for d in dense])  # [text, head, T]
        top = recv.topk(1, dim=-1).values.sum(-1) / recv.sum(-1)  # top 1% of 37 keys = 1 key
        assert np.allclose(result.concentration[li], top.mean(0).numpy(), atol=2e-5)
    # the sink and previous-token masses really vary (the comparison is not between zeros)
    assert result.profiles[..., list(result.metrics).index("prev"), :].max() > 0.05
    # the value weighting changes the masses (the weighted profiles are not the plain ones)
    plain, weighted = (result.profiles[..., list(result.metrics).index(m), :] for m in ("distant_4", "w_distant_4"))
    assert np.nanmax(np.abs(plain - weighted)) > 1e-2


def _tiny_with_tokenizer(family: str = "llama"):
    return wrap_model(build(family), tokenizer(), name=f"tiny-{family}")


def _texts(n_words: int, seed: int = 0) -> tuple[str, ...]:
    rng = np.random.default_rng(seed)
    return (" ".join(f"w{int(i)}" for i in rng.integers(1, VOCAB - 1, n_words)),)


def _cfg(**kw) -> AtlasConfig:
    base = dict(texts=_texts(200), length=40, windows=(4, 8), sinks=1, n_bins=5, causal_texts=1, budgets=(0.5,),
                seeds=2, needles=0, loss_tokens=16, key_context=8, backend="torch")  # fmt: skip
    return AtlasConfig(**(base | kw))


def test_run_writes_the_contract_files_and_resumes(tmp_path):
    lm = _tiny_with_tokenizer()
    cfg = _cfg()
    store = Store(tmp_path / "atlas")
    from interp.experiments.atlas import EXPERIMENT

    result = run(lm, cfg, store)
    store.save(EXPERIMENT, result, lm, cfg, 0.0)
    store.close()
    folder = tmp_path / "atlas"
    policy = json.loads((folder / "policy.json").read_text())
    n_kv = lm.arch.n_layers * lm.arch.n_kv_heads
    assert policy["window"] == 8 and policy["sinks"] == 1 and policy["unit"] == "kv_head"
    assert sorted(map(tuple, policy["full"] + policy["windowed"])) == [
        (L, g) for L in range(lm.arch.n_layers) for g in range(lm.arch.n_kv_heads)
    ]
    import pandas as pd

    heads = pd.read_csv(folder / "heads.csv")
    assert len(heads) == lm.arch.n_layers * lm.arch.n_heads and set(heads["kind"]) <= {
        "sink",
        "previous-token",
        "local",
        "global",
    }
    kv = pd.read_csv(folder / "kv_heads.csv")
    assert len(kv) == n_kv and {"score_profile", "score_razor", "score_random", "decision", "query_heads"} <= set(
        kv.columns
    )
    # a KV head scores the max distant mass of its query heads (heads.csv)
    for _, row in kv.iterrows():
        members = heads[(heads["layer"] == row["layer"]) & (heads["kv_head"] == row["kv_head"])]
        assert np.isclose(row["score_profile"], members["distant_8"].max())
        assert row["query_heads"] == " ".join(map(str, members["head"]))
    causal = pd.read_csv(folder / "causal.csv")
    assert list(causal.columns) == [
        "selector",
        "seed",
        "budget",
        "n_kv_heads",
        "kv_saved",
        "delta_loss",
        "delta_key_loss",
        "recall",
    ]
    assert sorted(causal["selector"]) == ["profile", "random", "random", "razor"]
    assert (causal["n_kv_heads"] == n_kv // 2).all()
    # the profile windows the KV heads with the least distant mass
    assert causal.loc[causal["selector"] == "profile", "kv_saved"].iloc[0] > 0
    # a condition that windows heads changes the loss (the edit reaches the model)
    assert causal["delta_loss"].abs().max() > 1e-4
    front = pd.read_csv(folder / "frontier.csv")
    assert sorted(front["selector"]) == ["profile", "random", "razor"]
    assert np.isclose(front.loc[front["selector"] == "random", "delta_loss"].iloc[0],
                      causal.loc[causal["selector"] == "random", "delta_loss"].mean())  # fmt: skip
    page = (folder / "atlas.html").read_text()
    assert "atlas-data" in page and (folder / "frontier.html").exists()
    # DuoAttention's format: [n_layers, n_kv_heads] in [0, 1], 0 exactly where policy.json windows
    gates = np.loadtxt(folder / "full_attention_heads.tsv", delimiter="\t", ndmin=2)
    assert gates.shape == (lm.arch.n_layers, lm.arch.n_kv_heads) and set(np.unique(gates)) <= {0.0, 1.0}
    assert sorted(map(tuple, np.argwhere(gates == 0).tolist())) == sorted(map(tuple, policy["windowed"]))
    assert json.loads((folder / "config.json").read_text()) == {"sink_size": 1, "recent_size": 8}
    checks = {c["name"]: c for c in json.loads((folder / "run.json").read_text())["checks"]}
    assert checks["texts_at_length"]["passed"] and "profile_below_random" in checks
    # resumed from the logs: the same numbers
    again = run(lm, cfg, Store(tmp_path / "atlas"))
    assert np.array_equal(again.profiles, result.profiles, equal_nan=True)
    pd.testing.assert_frame_equal(again.causal_dataframe(), result.causal_dataframe())


def test_policy_tsv_round_trips_to_the_same_decisions(tmp_path):
    """The exported TSV read back with --policy windows exactly the KV heads policy.json windows."""
    lm = _tiny_with_tokenizer()
    scores = run(lm, _cfg(causal_texts=0), Store()).distant_kv()
    cut = float(np.median(scores))  # half the KV heads windowed, half full: a mixed pattern to round-trip
    first = Store(tmp_path / "first")
    result = run(lm, _cfg(distant_max=cut, selectors=("profile",)), first)
    first.close()
    windowed = sorted(map(tuple, result.policy()["windowed"]))
    assert windowed, "the round trip must carry at least one windowed KV head"
    tsv = tmp_path / "first" / "full_attention_heads.tsv"
    assert read_policy(tsv, lm) == windowed
    assert read_policy(tmp_path / "first" / "policy.json", lm) == windowed
    assert 0 < len(windowed) < lm.arch.n_layers * lm.arch.n_kv_heads
    again = run(lm, _cfg(distant_max=cut, selectors=("profile",), policy_file=str(tsv)), Store(tmp_path / "again"))
    row = [r for r in again.causal if r["selector"] == "policy-file"]
    assert len(row) == 1 and row[0]["n_kv_heads"] == len(windowed)
    assert np.isclose(row[0]["kv_saved"], result.policy()["kv_saved"])


def test_start_at_the_first_edited_layer_gives_the_full_pass(tmp_path):
    """The causal check skips the layers below the first edited one (their residual from the unedited
    pass): the per-token losses equal those of the full edited pass."""
    from interp.experiments._atlas_causal import token_nll, unit_edits

    lm = _tiny_with_tokenizer()
    result = run(lm, _cfg(causal_texts=0), Store())
    ids = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(5))
    layer = lm.arch.n_layers - 1
    _, resid = token_nll(lm, ids, 16, (), capture_at=[layer])
    edits = unit_edits(result, [(layer, 0)])
    full, _ = token_nll(lm, ids, 16, edits)
    short, _ = token_nll(lm, ids, 16, edits, start=(layer, resid[layer]))
    plain, _ = token_nll(lm, ids, 16, ())
    assert np.allclose(full, short, atol=1e-5)
    assert not np.allclose(full, plain, atol=1e-4)  # the edit changes the loss: the comparison is not trivial


def test_short_context_loss_is_a_truncated_forward():
    from interp.experiments._atlas_causal import short_nll

    lm = _tiny_with_tokenizer()
    ids = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(6))
    got = short_nll(lm, ids, 12, 8, 4)  # tokens 28..39, each chunk of 4 sees the 8 tokens before it
    want = []
    for a in (28, 32, 36):
        logits = lm.forward(ids[:, a - 8 : a + 4])[0].double()
        want += torch.nn.functional.cross_entropy(logits[7:11], ids[0, a : a + 4], reduction="none").tolist()
    assert np.allclose(got, want, atol=1e-4)


def test_bad_input_is_one_clear_error(tmp_path):
    lm = _tiny_with_tokenizer()
    with pytest.raises(InterpError, match="fewer than 2 windows of 40 tokens"):
        run(lm, AtlasConfig(texts=_texts(50), length=40, windows=(4,), needles=0))
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"model": "SmolLM2-135M", "n_layers": 30, "n_heads": 9, "windowed": [], "window": 8, "sinks": 1})
    )
    with pytest.raises(InterpError, match="written for SmolLM2-135M"):
        read_policy(policy, lm)
    with pytest.raises(InterpError, match="written for SmolLM2-135M"):
        run(lm, _cfg(policy_file=str(policy)), Store(tmp_path / "refused"))
    assert not list((tmp_path / "refused").glob("*.jsonl"))  # refused before any work
    tsv = tmp_path / "full_attention_heads.tsv"
    tsv.write_text("1\t0\t1\n1\t1\t1\n")
    (tmp_path / "config.json").write_text(json.dumps({"sink_size": 1, "recent_size": 8}))
    with pytest.raises(InterpError, match="2x3 values, but the model has"):
        run(lm, _cfg(policy_file=str(tsv)), Store(tmp_path / "refused2"))
    assert not list((tmp_path / "refused2").glob("*.jsonl"))
    with pytest.raises(InterpError, match="budget 0.01 windows no KV head"):
        run(lm, _cfg(budgets=(0.01,)), Store(tmp_path / "refused3"))


@pytest.mark.parametrize(
    ("argv", "files", "message"),
    [
        (("--length", "256", "--windows", "64,256"), {}, "below --length 256"),
        (("--sinks", "-1"), {}, "--sinks must be >= 0"),
        (("--windows", "64,x"), {}, "--windows must be comma-separated ints"),
        (("--selectors", "profile,duo"), {}, "--selectors takes names from profile"),
        (("--budgets", "0.5,1.5"), {}, "beyond the KV heads"),
        (("--policy", "{p}/p.json"), {"p.json": "[[0, 1]]"}, "JSON list"),
        (("--policy", "{p}/p.json"), {"p.json": '{"full": []}'}, "no 'windowed' list"),
        (
            ("--policy", "{p}/h.tsv"),
            {"h.tsv": "1\t2\n", "config.json": '{"sink_size": 4, "recent_size": 64}'},
            "outside [0, 1]",
        ),
        (("--policy", "{p}/h.tsv"), {"h.tsv": "1\t0\n"}, "config.json beside it"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_writes_nothing(monkeypatch, capsys, tmp_path, argv, files, message):
    from helpers import cli

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "atlas"
    assert cli(monkeypatch, "atlas", *[a.format(p=tmp_path) for a in argv], "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()

"""Patching on tiny random Llamas (MHA and GQA): batched = slow per-patch loop, the exact
invariants (full residual -> 1, no-op -> 0), attribution = finite differences, path patching =
an independent construction, and our patching = transformer-lens's own on a TransformerBridge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_pair

from interp.analyses.patching import PatchTable, logit_diff, make_metric, target_index
from interp.datasets.tasks import TaskBatch
from interp.experiments.patching import (
    activation_patching,
    attribution_patching,
    patch_task,
    path_patching,
    task_baseline,
)
from interp.hooks import Edit, capture, intervene
from interp.models import wrap_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy machine thread sync dominates."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(n_heads: int, n_kv: int, *, vocab: int = 97, layers: int = 3, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=8,
        max_position_embeddings=64,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module", params=[(4, 4), (6, 2)], ids=["mha", "gqa"])
def lm64(request):
    """Tiny random Llama in float64 (HF's RMSNorm still computes in float32)."""
    return wrap_model(_model(*request.param).double(), None, name="tiny64")


@pytest.fixture(scope="module")
def batch():
    return random_pair(97, 3, 7, [1, 4], seed=1, spread=90)


def _ld(b):
    return lambda logits: logit_diff(logits, b.correct, b.wrong)


def _slow_patch(lm, b, site, layer, head, pos):
    """One forward per patch, written independently of the batched code."""
    with capture(lm, layers=[layer], keep=(site,)) as cap:
        lm.forward(b.clean)
    clean_act = cap[site, layer]

    def fn(x):
        x = x.clone()
        p = slice(None) if pos < 0 else pos
        if site in ("q", "k", "v", "z"):
            x[:, head, p] = clean_act[:, head, p]
        else:
            x[:, p] = clean_act[:, p]
        return x

    with intervene(lm, [Edit(site, layer, fn)]):
        return float(logit_diff(lm.forward(b.corrupt), b.correct, b.wrong).mean())


@pytest.mark.parametrize(
    "target,by_pos",
    [("head_out", True), ("q", False), ("k", True), ("v", False), ("resid_pre", True), ("mlp_out", False)],
)
def test_batched_patching_equals_slow_loop(lm64, batch, target, by_pos):
    site, index, *_ = target_index(lm64.arch, target, batch.n_pos, by_pos=by_pos, layers=[0, 2])
    # 5 copies of the 3 prompts per pass: several passes and a partial last one
    got = activation_patching(
        lm64, batch.clean, batch.corrupt, site, index, _ld(batch), batch_rows=15, progress=False
    ).values
    pick = torch.linspace(0, len(index) - 1, 4).long()  # a spread of patches, checked one forward each
    for i in pick.tolist():
        layer, head, pos = index[i].tolist()
        want = _slow_patch(lm64, batch, site, layer, head, pos)
        assert got[i].item() == pytest.approx(want, abs=1e-7), (target, layer, head, pos)
    if site in ("k", "v"):
        assert int(index[:, 1].max()) == lm64.arch.n_kv_heads - 1  # k/v patches are per kv head


@pytest.mark.parametrize(
    "target,by_pos",
    [("head_out", True), ("resid_pre", True), ("v", True), ("head_out", False), ("k", False), ("mlp_out", False)],
)
def test_every_patch_equals_slow_loop_with_skips_and_prefix_reuse(lm64, target, by_pos):
    """All patches of a longer prompt pair (40 tokens, corrupted at positions 5, 18 and 30), so
    that (a) by position, most patches copy values equal to the corrupted ones and are skipped,
    and passes with prefix reuse close early at a change of position (12 copies x 2 prompts x
    >= 22 tokens of work); (b) over all positions, every pass starts from the corrupted keys and
    values of positions 0-4, where nothing differs. Every value must still equal one forward per
    patch."""
    g = torch.Generator().manual_seed(7)
    clean = torch.randint(0, 97, (2, 40), generator=g)
    corrupt = clean.clone()
    corrupt[:, [5, 18, 30]] = torch.randint(0, 97, (2, 3), generator=g)
    b = TaskBatch.from_tokens(clean, corrupt, [3, 8], [11, 40])
    site, index, *_ = target_index(lm64.arch, target, b.n_pos, by_pos=by_pos, layers=[1])
    got = activation_patching(lm64, b.clean, b.corrupt, site, index, _ld(b), batch_rows=24, progress=False).values
    with capture(lm64, layers=[1], keep=(site,)) as cap:
        lm64.forward(b.clean)
    clean_act = cap[site, 1]
    want = torch.empty(len(index), dtype=torch.float64)
    for i, (layer, head, pos) in enumerate(index.tolist()):

        def fn(x, head=head, pos=pos):
            x = x.clone()
            p = slice(None) if pos < 0 else pos
            if head >= 0:
                x[:, head, p] = clean_act[:, head, p]
            else:
                x[:, p] = clean_act[:, p]
            return x

        with intervene(lm64, [Edit(site, layer, fn)]):
            want[i] = float(logit_diff(lm64.forward(b.corrupt), b.correct, b.wrong).mean())
    assert got.numpy() == pytest.approx(want.numpy(), abs=1e-7)
    unpatched = float(logit_diff(lm64.forward(b.corrupt), b.correct, b.wrong).mean())
    moved = (want - unpatched).abs() > 1e-6
    assert int(moved.sum()) > 0 and (by_pos or bool(moved.all()))
    if by_pos:
        assert int(moved.sum()) < len(index)  # both kinds of patch occur: ones that act and no-ops


def test_full_residual_restores_clean_and_noop_gives_zero(lm64, batch):
    res = patch_task(lm64, batch, target="resid_pre", by_pos=False, progress=False)
    assert res.axes == ("layer",)
    assert res.scores == pytest.approx([1.0] * lm64.arch.n_layers, abs=1e-7)
    # positions where clean and corrupted tokens agree: the layer-0 residual is the same there
    same = [p for p in range(batch.n_pos) if bool((batch.clean[:, p] == batch.corrupt[:, p]).all())]
    by_pos = patch_task(lm64, batch, target="resid_pre", by_pos=True, layers=[0], progress=False)
    assert len(same) >= 3
    assert by_pos.scores[0, same] == pytest.approx([0.0] * len(same), abs=1e-7)
    assert abs(by_pos.scores[0, 1]) > 1e-6  # a corrupted position does something


def test_attribution_equals_directional_derivative(lm64, batch):
    """Attribution of a head = d/de M(z_corrupt + e (z_clean - z_corrupt)) at e = 0, computed here
    by autograd through a scalar e (a different graph), and roughly by central differences
    (HF's RMSNorm computes in float32, so differences are only good to ~1e-3)."""
    base, clean_logits, corrupt_logits = task_baseline(lm64, batch)
    metric = make_metric("score", batch, clean_logits, corrupt_logits)
    site, index, *_ = target_index(lm64.arch, "head_out", batch.n_pos, by_pos=False, layers=[1])
    est = attribution_patching(lm64, batch.clean, batch.corrupt, site, index, metric).values
    with capture(lm64, layers=[1], keep=("z",)) as cap:
        lm64.forward(batch.clean)
    z_clean = cap["z", 1]
    with capture(lm64, layers=[1], keep=("z",)) as cap:
        lm64.forward(batch.corrupt)
    z_corrupt = cap["z", 1]

    def f(head, eps):
        def fn(x):
            x = x.clone()
            x[:, head] = z_corrupt[:, head] + eps * (z_clean[:, head] - z_corrupt[:, head])
            return x

        with intervene(lm64, [Edit("z", 1, fn)]):
            return metric(lm64.forward(batch.corrupt, grad=True)).mean()

    for i, (_, head, _) in enumerate(index.tolist()):
        e = torch.zeros((), dtype=torch.float64, requires_grad=True)
        (deriv,) = torch.autograd.grad(f(head, e), [e])
        assert est[i].item() == pytest.approx(deriv.item(), rel=1e-6, abs=1e-12)
        h = 1e-3
        fd = (f(head, h).item() - f(head, -h).item()) / (2 * h)
        assert est[i].item() == pytest.approx(fd, rel=2e-2, abs=1e-5)
    assert est.abs().max() > 1e-3  # the test is not comparing zeros


def test_attribution_by_position_sums_to_all_positions(lm64, batch):
    by_pos = patch_task(lm64, batch, target="resid_pre", method="attribution", by_pos=True, layers=[1], progress=False)
    whole = patch_task(lm64, batch, target="resid_pre", method="attribution", by_pos=False, layers=[1], progress=False)
    assert by_pos.scores[1].sum() == pytest.approx(whole.scores[1], rel=1e-9)


@pytest.mark.parametrize("freeze_mlps", [True, False])
def test_path_patching_matches_independent_construction(lm64, batch, freeze_mlps):
    metric = _ld(batch)
    receivers = [(2, 0), (2, 1)]  # query heads of layer 2
    senders = torch.tensor([(0, 0), (0, lm64.arch.n_heads - 1), (1, 1), (2, 0)])
    got = path_patching(
        lm64,
        batch.clean,
        batch.corrupt,
        senders,
        receivers,
        "q",
        metric,
        freeze_mlps=freeze_mlps,
        batch_rows=6,
        progress=False,
    )
    layers = [0, 1]
    with capture(lm64, layers=layers, keep=("z", "mlp_out")) as cap:
        lm64.forward(batch.corrupt)
    zc = {L: cap["z", L] for L in layers}
    with capture(lm64, layers=layers, keep=("z",)) as cap:
        lm64.forward(batch.clean)
    zk = {L: cap["z", L] for L in layers}
    with capture(lm64, layers=[2], keep=("q", "resid_pre")) as cap:
        lm64.forward(batch.corrupt)
    q_corrupt, resid_corrupt = cap["q", 2], cap["resid_pre", 2]
    d = lm64.arch.d_head
    for i, (sl, sh) in enumerate(senders.tolist()):
        if sl >= 2:
            want = float(metric(lm64.forward(batch.corrupt)).mean())  # no path to layer 2 from layer 2
        else:
            if freeze_mlps:
                # everything frozen: the receivers' residual is the corrupted one plus the sender's o_proj delta
                w_o = lm64.hf_model.model.layers[sl].self_attn.o_proj.weight[:, sh * d : (sh + 1) * d]
                delta = (zk[sl][:, sh] - zc[sl][:, sh]) @ w_o.T
                edits = [Edit("resid_pre", 2, lambda x, delta=delta: resid_corrupt + delta)]
            else:

                def z_fn(L):
                    def fn(x):
                        x = zc[L].clone()
                        if L == sl:
                            x[:, sh] = zk[L][:, sh]
                        return x

                    return fn

                edits = [Edit("z", L, z_fn(L)) for L in layers]
            with intervene(lm64, edits), capture(lm64, layers=[2], keep=("q",)) as cap:
                lm64.forward(batch.corrupt)
            q_new = cap["q", 2]

            def recv(x, q_new=q_new):
                x = x.clone()
                x[:, [0, 1]] = q_new[:, [0, 1]]
                return x

            with intervene(lm64, [Edit("q", 2, recv)]):
                want = float(metric(lm64.forward(batch.corrupt)).mean())
            assert not torch.allclose(q_new, q_corrupt)  # the sender reaches the receivers
        assert got.values[i].item() == pytest.approx(want, abs=1e-7), (sl, sh)
        assert got.to_grid()[sl, sh] == pytest.approx(want, abs=1e-7), (sl, sh)
    # the same table type as activation_patching: labelled like the model, with both runs' metric
    assert isinstance(got, PatchTable) and got.site == "path:q"
    assert got.clean == pytest.approx(float(metric(lm64.forward(batch.clean)).mean()), abs=1e-7)
    assert got.corrupt == pytest.approx(float(metric(lm64.forward(batch.corrupt)).mean()), abs=1e-7)
    grid = got.to_grid()
    assert grid.shape == (lm64.arch.n_layers, lm64.arch.n_heads)
    assert int(np.isfinite(grid).sum()) == len(senders)  # NaN where no head was sent from
    df = got.to_dataframe()
    assert list(df.columns) == ["layer", "head", "score", "normalised"]
    want_norm = (df["score"] - got.corrupt) / (got.clean - got.corrupt)
    assert df["normalised"].to_numpy() == pytest.approx(want_norm.to_numpy(), abs=1e-12)


def test_metric_must_return_one_value_per_prompt(lm64, batch):
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="one scalar per prompt"):
        patch_task(lm64, batch, metric=lambda logits: logits[:, -1], layers=[0], progress=False)
    with pytest.raises(InterpError, match="unknown target"):
        patch_task(lm64, batch, target="attn_pattern", progress=False)


# --------------------------------------------------------------------------------------------
# transformer-lens cross-check (float32, a bridge over the same weights)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A tiny random GQA Llama with the SmolLM2 tokenizer, saved as a HF folder."""
    from transformers import AutoTokenizer

    from interp.models import _embedded_weights_dir

    tok = AutoTokenizer.from_pretrained(_embedded_weights_dir())
    path = tmp_path_factory.mktemp("tiny-smol")
    _model(6, 2, vocab=len(tok), layers=2, seed=3).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _load(path, backend):
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    return wrap_model(model, AutoTokenizer.from_pretrained(path), name=str(path), backend=backend)


def test_matches_transformer_lens_patching(saved_tiny):
    """Our batched patching = transformer-lens's generic_activation_patch on a TransformerBridge of
    the same weights (a spread of patches: TL runs one bridge forward per patch), and our TL
    backend = our HF backend."""
    import pandas as pd
    from transformer_lens import patching as tlp

    from interp.datasets.ioi import IOIConfig, ioi

    hf, tl = _load(saved_tiny, "hf"), _load(saved_tiny, "tl")
    b = ioi(hf.tokenizer, IOIConfig(n=3, seed=5))
    bridge = tl.model
    _, clean_cache = bridge.run_with_cache(b.clean)

    def tl_metric(logits):
        return logit_diff(logits, b.correct, b.wrong).mean()

    cases = [
        ("head_out", "z", tlp.layer_pos_head_vector_patch_setter, ["layer", "pos", "head"]),
        ("resid_pre", "resid_pre", tlp.layer_pos_patch_setter, ["layer", "pos"]),
    ]
    for target, act_name, setter, cols in cases:
        ours_hf = patch_task(hf, b, target=target, by_pos=True, metric="logit_diff", progress=False)
        ours_tl = patch_task(tl, b, target=target, by_pos=True, metric="logit_diff", progress=False)
        assert ours_tl.scores == pytest.approx(ours_hf.scores, abs=1e-4), target
        df = ours_hf.to_dataframe()
        pick = df.iloc[torch.linspace(0, len(df) - 1, 8).long().tolist()]
        index_df = pd.DataFrame({c: pick["position" if c == "pos" else c].astype(int).to_numpy() for c in cols})
        theirs = tlp.generic_activation_patch(
            bridge, b.corrupt, clean_cache, tl_metric, setter, act_name, index_df=index_df
        )
        assert pick["score"].to_numpy() == pytest.approx(theirs.double().numpy(), abs=1e-4), target
        assert theirs.abs().max() > 1e-3  # non-trivial effects were compared


# --------------------------------------------------------------------------------------------
# CLI (tiny model with the SmolLM2 tokenizer, in-process)
# --------------------------------------------------------------------------------------------


def _assert_recorded_correlation(out, recorded: float) -> None:
    """run.json's attribution-vs-activation correlation is Pearson's r of the two tables' scores."""
    import numpy as np
    import pandas as pd

    attr, act = pd.read_csv(out / "patch.csv"), pd.read_csv(out / "patch_activation.csv")
    keys = ["layer", "head", "position"]
    assert attr[keys].equals(act[keys])  # the same cells, in the same order
    x, y = attr["score"].to_numpy(), act["score"].to_numpy()
    ok = np.isfinite(x) & np.isfinite(y)
    assert ok.sum() >= 3
    assert recorded == pytest.approx(float(np.corrcoef(x[ok], y[ok])[0, 1]), abs=1e-9)


def _cli(monkeypatch, *argv) -> int:
    import sys

    from interp.cli import main

    monkeypatch.setattr(sys, "argv", ["interp", *map(str, argv)])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_cli_writes_and_compares_runs(saved_tiny, tmp_path, monkeypatch, capsys):
    import json

    import pandas as pd

    a, b, r = tmp_path / "ioi", tmp_path / "co", tmp_path / "resid"
    assert _cli(monkeypatch, "patch", "ioi", "--model", saved_tiny, "--n", 2, "--out", a) == 0
    assert (
        _cli(
            monkeypatch,
            "patch",
            "colored-objects",
            "--model",
            saved_tiny,
            "--n",
            2,
            "--method",
            "attribution",
            "--compare",
            "--out",
            b,
        )
        == 0
    )
    assert (
        _cli(
            monkeypatch,
            "patch",
            "ioi",
            "--model",
            saved_tiny,
            "--n",
            2,
            "--target",
            "resid_pre",
            "--layers",
            "1",
            "--out",
            r,
        )
        == 0
    )
    df = pd.read_csv(a / "patch.csv")
    assert list(df.columns) == ["layer", "head", "position", "pos_label", "score", "normalised"]
    assert len(df) == 2 * 6 and df["position"].isna().all()  # 2 layers x 6 heads, all positions
    info = json.loads((a / "run.json").read_text())
    base = info["result"]["baseline"]
    assert {"clean_accuracy", "clean_logit_diff", "corrupt_logit_diff"} <= set(base)
    assert (a / "patch.html").stat().st_size > 10_000
    attr = json.loads((b / "run.json").read_text())["result"]
    assert attr["method"] == "attribution"
    _assert_recorded_correlation(b, attr["correlation_attribution_activation"])
    resid = pd.read_csv(r / "patch.csv")
    assert resid["head"].isna().all() and set(resid["layer"]) == {1} and resid["position"].notna().all()
    capsys.readouterr()
    # the model backend is the launch option: the TL bridge patches to the same values as HF
    tl_out = tmp_path / "ioi-tl"
    assert (
        _cli(monkeypatch, "--model-backend", "tl", "patch", "ioi", "--model", saved_tiny, "--n", 2, "--out", tl_out)
        == 0
    )
    assert json.loads((tl_out / "run.json").read_text())["backend"] == "tl"
    assert pd.read_csv(tl_out / "patch.csv")["score"].to_numpy() == pytest.approx(df["score"].to_numpy(), abs=1e-4)
    assert _cli(monkeypatch, "patch", "overlap", a, b, "--top", 3, "--out", tmp_path / "ov") == 0
    ov = json.loads((tmp_path / "ov" / "overlap.json").read_text())
    assert len(ov["heads_a"]) == 3 and ov["share"] == len(ov["shared"]) / 3
    # bad input: one clear line, exit code 2
    for argv, message in [
        (("patch", "ioi", "--target", "attn_pattern", "--out", tmp_path / "x"), "unknown target"),
        (("patch", "ioi", "--method", "gradient", "--out", tmp_path / "x"), "unknown method"),
        (("patch", "overlap", a, r), "no head axis"),
        (("patch", "overlap", a, tmp_path), "no patch.csv"),
        (("patch", "ioi", "--backend", "tl", "--out", tmp_path / "x"), "No such option"),  # now --model-backend
    ]:
        capsys.readouterr()
        assert _cli(monkeypatch, *argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# `interp patch pairs FILE.jsonl`: your own prompt pairs
# --------------------------------------------------------------------------------------------

_PAIRS = [
    (
        "When Mary and John went to the store, John gave a drink to",
        "When Anna and Paul went to the store, Paul gave a drink to",
        " Mary",
        " John",
    ),
    (
        "When Tom and Kate went to the park, Kate gave a ball to",
        "When Adam and Lucy went to the park, Lucy gave a ball to",
        " Tom",
        " Kate",
    ),
    (
        "When Emma and Jack went to the beach, Emma gave a book to",
        "When Sam and Ben went to the beach, Sam gave a book to",
        " Jack",
        " Emma",
    ),
]


def _pairs_file(path, pairs=_PAIRS):
    import json

    keys = ("clean", "corrupt", "correct", "wrong")
    path.write_text("".join(json.dumps(dict(zip(keys, p))) + "\n" for p in pairs), encoding="utf-8")
    return path


def test_cli_pairs_equal_one_forward_per_patch_and_resume(saved_tiny, tmp_path, monkeypatch):
    import json

    import pandas as pd

    pairs, out = _pairs_file(tmp_path / "names.jsonl"), tmp_path / "run"
    argv = (
        "patch",
        "pairs",
        pairs,
        "--model",
        saved_tiny,
        "--target",
        "resid_pre",
        "--metric",
        "logit_diff",
        "--out",
        out,
    )
    assert _cli(monkeypatch, *argv) == 0
    df = pd.read_csv(out / "patch.csv")
    # reference: the file tokenized here, one plain forward per patch
    hf = _load(saved_tiny, "hf")
    enc = lambda texts: torch.tensor([hf.tokenizer(t, add_special_tokens=False).input_ids for t in texts])  # noqa: E731
    one = lambda word: hf.tokenizer(word, add_special_tokens=False).input_ids[0]  # noqa: E731
    b = TaskBatch.from_tokens(
        enc([p[0] for p in _PAIRS]),
        enc([p[1] for p in _PAIRS]),
        [one(p[2]) for p in _PAIRS],
        [one(p[3]) for p in _PAIRS],
    )
    assert len(df) == 2 * b.n_pos and df["head"].isna().all()  # 2 layers x every position
    for row in df.itertuples():
        want = _slow_patch(hf, b, "resid_pre", int(row.layer), -1, int(row.position))
        assert row.score == pytest.approx(want, abs=1e-4), (row.layer, row.position)
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["task"] == "names" and info["result"]["baseline"]["n"] == 3
    assert info["settings"]["pairs"] == str(pairs) and (out / "patch.html").stat().st_size > 10_000

    # resume: keep the log's first pass only, with a marker value that only a resumed run can report
    log = out / "patch_log.jsonl"
    head, first = log.read_text().splitlines()[:2]
    record = json.loads(first)
    assert 0 < len(record["patches"]) < len(df)  # several passes were logged
    record["values"] = [1234.5] * len(record["values"])
    log.write_text(head + "\n" + json.dumps(record) + "\n")
    assert _cli(monkeypatch, *argv) == 0
    resumed = pd.read_csv(out / "patch.csv").set_index(["layer", "position"])["score"]
    marked = {(p[0], p[2]) for p in record["patches"]}
    original = df.set_index(["layer", "position"])["score"]
    assert all(resumed[k] == 1234.5 for k in marked)
    others = [k for k in original.index if k not in marked]
    assert resumed[others].to_numpy() == pytest.approx(original[others].to_numpy(), abs=1e-6)
    assert _cli(monkeypatch, *argv, "--fresh") == 0
    assert pd.read_csv(out / "patch.csv")["score"].to_numpy() == pytest.approx(df["score"].to_numpy(), abs=1e-6)


def test_cli_pairs_resume_refuses_other_settings_or_an_edited_file(saved_tiny, tmp_path, monkeypatch, capsys):
    pairs, out = _pairs_file(tmp_path / "names.jsonl"), tmp_path / "run"
    base = ("patch", "pairs", pairs, "--model", saved_tiny, "--target", "resid_pre", "--layers", "0", "--out", out)
    assert _cli(monkeypatch, *base) == 0
    capsys.readouterr()
    assert _cli(monkeypatch, *base, "--metric", "kl") == 2
    assert "other settings" in capsys.readouterr().err
    _pairs_file(pairs, _PAIRS[:2])
    assert _cli(monkeypatch, *base) == 2
    assert "other settings" in capsys.readouterr().err
    assert _cli(monkeypatch, *base, "--fresh") == 0


@pytest.mark.parametrize(
    "flags",
    [
        ("--target", "head_out", "--by-pos", "--method", "attribution", "--compare", "--metric", "kl"),
        ("--target", "v", "--metric", "score"),
        ("--target", "mlp_out", "--all-pos", "--method", "attribution"),
    ],
    ids=["head_out-attribution-kl", "v-activation-score", "mlp_out-attribution"],
)
def test_cli_pairs_takes_every_target_method_and_metric(saved_tiny, tmp_path, monkeypatch, flags):
    import json

    import numpy as np
    import pandas as pd

    out = tmp_path / "run"
    assert (
        _cli(
            monkeypatch,
            "patch",
            "pairs",
            _pairs_file(tmp_path / "p.jsonl"),
            "--model",
            saved_tiny,
            *flags,
            "--out",
            out,
        )
        == 0
    )
    info = json.loads((out / "run.json").read_text())["result"]
    df = pd.read_csv(out / "patch.csv")
    assert info["target"] == flags[1] and np.isfinite(df["score"]).all() and (df["score"] != 0).any()
    if "--compare" in flags:
        _assert_recorded_correlation(out, info["correlation_attribution_activation"])
    if flags[1] == "v":
        assert df["head"].max() == 1  # per kv head (2 kv heads)


def test_cli_pairs_errors_name_the_line(saved_tiny, tmp_path, monkeypatch, capsys):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(_pairs_file(tmp_path / "ok.jsonl").read_text() + "{oops\n", encoding="utf-8")
    mismatch = _pairs_file(
        tmp_path / "len.jsonl",
        [_PAIRS[0], (_PAIRS[1][0], "When Maximilian and Lucy went to the park, Lucy gave a ball to", " Tom", " Kate")],
    )
    cases = [
        # the file is checked before the model loads: a model that does not exist is never reached
        (
            ("patch", "pairs", bad_json, "--model", tmp_path / "no-model", "--out", tmp_path / "x"),
            "bad.jsonl line 4 is not valid JSON",
        ),
        (("patch", "pairs", tmp_path / "none.jsonl", "--out", tmp_path / "x"), "not found"),
        (
            ("patch", "pairs", mismatch, "--model", saved_tiny, "--out", tmp_path / "y"),
            "len.jsonl line 2: the clean prompt has",
        ),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert _cli(monkeypatch, *argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
@pytest.mark.parametrize("target", ["k", "head_out", "resid_pre"])
def test_patching_on_windowed_models_equals_slow_loop(family, target):
    """Sliding-window layers (window 5, 24-token prompts): the prefix-reuse cache keeps every key
    and the model applies its window through the mask, so every by-position patch still equals
    one plain forward per patch."""
    from families import build

    from interp.models import wrap_model

    lm = wrap_model(build(family), None, name=family)
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 101, (2, 24), generator=g)
    corrupt = clean.clone()
    corrupt[:, [4, 15]] = torch.randint(0, 101, (2, 2), generator=g)
    b = TaskBatch.from_tokens(clean, corrupt, [3, 8], [11, 40])
    site, index, *_ = target_index(lm.arch, target, b.n_pos, by_pos=True, layers=[1])
    got = activation_patching(lm, b.clean, b.corrupt, site, index, _ld(b), batch_rows=8, progress=False).values
    pick = [i for i, (_, _, pos) in enumerate(index.tolist()) if pos in (4, 15, 20)]
    assert pick
    for i in pick:
        layer, head, pos = index[i].tolist()
        assert got[i].item() == pytest.approx(_slow_patch(lm, b, site, layer, head, pos), abs=1e-6), (target, head, pos)

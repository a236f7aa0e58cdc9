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
    q: torch.Tensor, k: torch.Tensor, scale: float, sinks: int, windows, sliding
) -> dict[str, torch.Tensor]:
    """Every atlas row metric from the dense float64 attention of one layer ([head, T] each)."""
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
    for w in windows:
        rows[f"recent_{w}"] = (a * ((d >= 0) & (d < w))).sum(-1)
        rows[f"distant_{w}"] = (a * ((d >= w) & (j >= sinks))).sum(-1)
    return rows | {"recv": a.sum(1)}


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
        with capture(lm, keep=("q", "k")) as cap:
            lm.forward(ids)
        dense.append([
            _dense_rows(cap["q", L], cap["k", L], lm.arch.scale, 2, (4, 16), lm.attention_kwargs(L)["sliding_window"])
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


def _tiny_with_tokenizer(family: str = "llama"):
    return wrap_model(build(family), tokenizer(), name=f"tiny-{family}")


def _texts(n_words: int, seed: int = 0) -> tuple[str, ...]:
    rng = np.random.default_rng(seed)
    return (" ".join(f"w{int(i)}" for i in rng.integers(1, VOCAB - 1, n_words)),)


def test_run_writes_the_contract_files_and_resumes(tmp_path):
    lm = _tiny_with_tokenizer()
    cfg = AtlasConfig(texts=_texts(200), length=40, windows=(4, 8), sinks=1, n_bins=5, causal_texts=1, budgets=(0.5,),
                      seeds=2, needles=0, loss_tokens=16, backend="torch")  # fmt: skip
    store = Store(tmp_path / "atlas")
    from interp.experiments.atlas import EXPERIMENT

    result = run(lm, cfg, store)
    store.save(EXPERIMENT, result, lm, cfg, 0.0)
    store.close()
    folder = tmp_path / "atlas"
    policy = json.loads((folder / "policy.json").read_text())
    n = lm.arch.n_layers * lm.arch.n_heads
    assert policy["window"] == 8 and policy["sinks"] == 1
    assert len(policy["full"]) + len(policy["windowed"]) == n
    assert sorted(map(tuple, policy["full"] + policy["windowed"])) == [
        (L, h) for L in range(lm.arch.n_layers) for h in range(lm.arch.n_heads)
    ]
    import pandas as pd

    heads = pd.read_csv(folder / "heads.csv")
    assert len(heads) == n and set(heads["kind"]) <= {"sink", "previous-token", "local", "global"}
    causal = pd.read_csv(folder / "causal.csv")
    assert list(causal.columns) == ["condition", "seed", "budget", "n_heads", "kv_saved", "delta_loss", "recall"]
    assert sorted(causal["condition"]) == ["distant", "policy", "policy.json", "random", "random"]
    assert (causal.loc[causal["condition"] == "policy", "n_heads"] == n // 2).all()
    # a condition that windows heads changes the loss (the edit reaches the model)
    assert causal.loc[causal["condition"] != "policy.json", "delta_loss"].abs().max() > 1e-4
    page = (folder / "atlas.html").read_text()
    assert "atlas-data" in page and (folder / "atlas.html").stat().st_size < 10 * 2**20
    profiles = pd.read_csv(folder / "profiles.csv")
    assert len(profiles) == n * len(result.metrics) * result.bins.shape[0]
    checks = {c["name"]: c for c in json.loads((folder / "run.json").read_text())["checks"]}
    assert checks["texts_at_length"]["passed"] and "policy_budget_met" in checks
    # resumed from the logs: the same numbers
    again = run(lm, cfg, Store(tmp_path / "atlas"))
    assert np.array_equal(again.profiles, result.profiles, equal_nan=True)


def test_bad_input_is_one_clear_error(tmp_path):
    lm = _tiny_with_tokenizer()
    with pytest.raises(InterpError, match="fewer than 2 windows of 40 tokens"):
        run(lm, AtlasConfig(texts=_texts(50), length=40, windows=(4,), needles=0))
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"model": "SmolLM2-135M", "n_layers": 30, "n_heads": 9, "windowed": []}))
    with pytest.raises(InterpError, match="written for SmolLM2-135M"):
        read_policy(policy, lm)
    cfg = AtlasConfig(texts=_texts(200), length=40, windows=(4,), needles=0, policy_file=str(policy))
    with pytest.raises(InterpError, match="written for SmolLM2-135M"):
        run(lm, cfg, Store(tmp_path / "refused"))
    assert not (tmp_path / "refused" / "samples.jsonl").exists()  # refused before any work


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--length", "256", "--windows", "64,256"), "below --length 256"),
        (("--sinks", "-1"), "--sinks must be >= 0"),
        (("--windows", "64,x"), "--windows takes comma-separated integers"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_writes_nothing(monkeypatch, capsys, tmp_path, argv, message):
    from helpers import cli

    out = tmp_path / "atlas"
    assert cli(monkeypatch, "atlas", *argv, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()

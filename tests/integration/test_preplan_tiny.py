"""Preplan and anchor analysis on tiny random Llamas (MHA and GQA): kernel path vs a float64
computation from materialised attention, greedy decoding, bad input (API and CLI)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from interp.analyses.preplan import PreplanConfig, PreplanStats, analyse, default_layers
from interp.errors import InterpError
from interp.experiments.preplan import score_ids as score_preplan_ids
from interp.hooks import capture


def dense_stats(q, k, scale, n_prompt, window, band):
    """Float64 dist, waad (response rows) and band (response keys) from the full attention matrix.

    Test-only reference: materialises A [head, T, T] from captured q [1, head, T, d] and
    k [1, kv_head, T, d] (HF repeat_kv order) and applies docs/METRICS.md literally.
    """
    q, k = q[0].double(), k[0].double()
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    t = q.shape[1]
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    s = (q @ k.transpose(-1, -2)) * scale
    a = torch.softmax(s.masked_fill(j > i, float("-inf")), dim=-1)
    lag = (i - j).clamp(min=0).double()
    dist = (a * lag).sum(-1)[:, n_prompt:]
    waad = (a * lag.clamp(max=window)).sum(-1)[:, n_prompt:]
    lo, hi = band
    in_band = ((i - j) >= lo) & ((i - j) <= hi)
    col = (a * in_band).sum(-2) / in_band.sum(0)  # 0/0 = NaN where no query lies in the band
    return dist.numpy(), waad.numpy(), col[:, n_prompt:].numpy()


def dense_found(lm, ids, n_prompt, layers, cfg):
    with capture(lm, layers=layers, keep=("q", "k")) as cap:
        lm.forward(ids)
    parts = [dense_stats(cap["q", l], cap["k", l], lm.arch.scale, n_prompt, cfg.window, cfg.band) for l in layers]
    stats = PreplanStats(tuple(layers), *(np.stack([p[n] for p in parts]) for n in range(3)))
    return stats, analyse(stats, cfg)


def _ids(n, seed):
    return torch.randint(0, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def test_kernel_path_matches_dense_float64(tiny_lm):
    cfg = PreplanConfig(band=(4, 30))  # short band so FAI is defined on most of a 40-token response
    prompt, resp = _ids(24, 1), _ids(40, 2)
    res = score_preplan_ids(tiny_lm, cfg, prompt, resp)
    layers = default_layers(tiny_lm.arch.n_layers)
    assert res.layers == tuple(layers)
    stats, ref = dense_found(tiny_lm, torch.cat([prompt, resp], 1), 24, layers, cfg)
    np.testing.assert_allclose(res.span, ref.span, rtol=1e-5, atol=1e-6)
    assert (res.local == ref.local).all() and (res.global_ == ref.global_).all()
    np.testing.assert_allclose(res.waad, ref.waad, rtol=1e-5, atol=1e-6)
    assert np.isnan(res.fai).tolist() == np.isnan(ref.fai).tolist()
    assert np.isnan(res.fai).sum() == 4  # the last lo response keys have no query in the band
    np.testing.assert_allclose(res.fai, ref.fai, rtol=1e-4, atol=1e-7)
    assert (res.preplan == ref.preplan).all() and (res.anchor == ref.anchor).all()
    assert res.preplan.any() and res.anchor.any()
    assert res.to_dataframe().pos.tolist() == list(range(24, 64))
    # no tokenizer: tokens are shown as their ids (LoadedModel.token_strings / decode)
    assert res.tokens == tuple(str(i) for i in resp[0].tolist()) and res.response == " ".join(res.tokens)


def test_greedy_response_is_argmax_of_teacher_forcing(tiny_lm):
    tiny_lm.hf_model.generation_config.eos_token_id = None  # a random model: never stop early
    prompt = _ids(12, 3)
    new = tiny_lm.greedy(prompt, 6, stop=tiny_lm.stop_ids)
    assert new.shape == (1, 6)
    logits = tiny_lm.forward(torch.cat([prompt, new], 1))
    assert logits[0, 11:17].argmax(-1).tolist() == new[0].tolist()
    res = score_preplan_ids(tiny_lm, PreplanConfig(max_new_tokens=6), prompt)
    assert res.generated and res.token_ids.tolist() == new[0].tolist()


def test_bad_input_api(tiny_lm):
    cfg = PreplanConfig()
    with pytest.raises(InterpError, match="response is empty"):
        score_preplan_ids(tiny_lm, cfg, _ids(10, 0), torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(InterpError, match="exceed the context of 256"):
        score_preplan_ids(tiny_lm, cfg, _ids(200, 0), _ids(100, 1))
    with pytest.raises(InterpError, match="max_new_tokens"):
        score_preplan_ids(tiny_lm, PreplanConfig(max_new_tokens=100), _ids(200, 0))
    with pytest.raises(InterpError, match="layer 7 out of range"):
        score_preplan_ids(tiny_lm, PreplanConfig(layers=(1, 7)), _ids(10, 0), _ids(10, 1))
    with pytest.raises(InterpError, match="at least 2 response tokens"):
        score_preplan_ids(tiny_lm, cfg, _ids(10, 0), _ids(1, 1))


def _cli(monkeypatch, capsys, *args):
    from interp import cli

    monkeypatch.setattr(sys, "argv", ["interp", "score", "preplan", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preplan-quantile", "1.5"], "preplan_quantile must be a share strictly between 0 and 1"),
        (["--anchor-quantile", "0"], "anchor_quantile must be a share strictly between 0 and 1"),
        (["--band-lo", "100", "--band-hi", "10"], "band lo=100 > hi=10"),
        (["--prompt", "2+2?", "--response", "  "], "--response is empty"),
        (["--prompt", "a", "--prompts", "x.jsonl"], "either --prompt or --prompts"),
        (["--layers", "1,x"], "--layers takes layers and ranges like 0-5,10"),
    ],
)
def test_cli_bad_input_exits_2(monkeypatch, capsys, tmp_path, args, message):
    code, err = _cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "o"))
    assert code == 2
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_run_scores_every_prompt_and_resumes(tiny_lm, tmp_path, monkeypatch):
    """The runner over prompt ids (a stand-in tokenizer-free route: encode is patched) equals
    `score_ids` per prompt, writes one log record per prompt and resumes without recomputing."""
    import interp.experiments.preplan as runner
    from interp.datasets.prompts import Prompt
    from interp.experiments import Store

    texts = {"q0": _ids(20, 5), "a0": _ids(30, 6), "q1": _ids(16, 7), "a1": _ids(25, 8)}
    monkeypatch.setattr(tiny_lm, "encode", lambda text, check=True, bos=True: texts[text], raising=False)
    monkeypatch.setattr(tiny_lm, "chat_prompt", lambda user, system=None: user, raising=False)
    cfg = PreplanConfig(prompts=(Prompt("x", "q0", "a0"), Prompt("y", "q1", "a1")), band=(4, 20))
    out = runner.run(tiny_lm, cfg, Store(tmp_path / "run"))
    assert out.ids == ("x", "y")
    for got, (q, a) in zip(out.results, [("q0", "a0"), ("q1", "a1")]):
        want = score_preplan_ids(tiny_lm, cfg, texts[q], texts[a], prompt=q, response=a)
        np.testing.assert_array_equal(got.waad, want.waad)
        np.testing.assert_array_equal(got.fai, want.fai)
        assert (got.anchor == want.anchor).all() and got.response == a
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the settings header and one record per prompt
    monkeypatch.setattr(runner, "score_ids", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = runner.run(tiny_lm, cfg, Store(tmp_path / "run"))
    assert again.to_dataframe().equals(out.to_dataframe())

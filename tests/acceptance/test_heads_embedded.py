"""The head analyses on the embedded SmolLM2: known induction / previous-token heads, float64 agreement,
and the report's four head sections at quick sizes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from interp.analyses.heads import HeadConfig
from interp.datasets.random_tokens import repeated_random_tokens
from interp.experiments.heads import run
from interp.hooks import capture


def test_induction_and_previous_token_heads(embedded):
    lm = embedded
    result = run(lm, HeadConfig(n_seqs=2, length=32, seed=3))
    ((il, ih, iscore),) = result.top("induction", 1)
    ((pl, ph, pscore),) = result.top("previous", 1)
    assert iscore > 0.5 and 12 <= il <= 22, (il, ih, iscore)  # regression guard (one run): L18H6 0.89 (8 x 64 tokens)
    assert pscore > 0.5, (pl, ph, pscore)  # regression guard (one run): L16H0 0.89
    # the top induction head's score against a float64 materialised attention matrix
    tok = lm.tokenizer
    ids = repeated_random_tokens(2, 32, len(tok), 3, tok.bos_token_id, tok.all_special_ids)
    with capture(lm, layers=[il], keep=("q", "k")) as cap:
        lm.forward(ids)
    q = cap["q", il][:, ih].double()
    k = cap["k", il][:, lm.arch.kv_map[ih]].double()
    t = ids.shape[1]
    s = (q @ k.transpose(-1, -2)) * lm.attention_kwargs(il)["scale"]
    a = torch.softmax(s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")), -1)
    second = torch.arange(33, t)
    assert abs(float(a[:, second, second - 31].mean()) - iscore) < 1e-4


@pytest.mark.slow
def test_report_head_sections(embedded, tmp_path):
    from interp.report import ReportConfig, run_report

    stages = ("heads", "select_copy", "qr_heads", "influence")
    rep = run_report(embedded, tmp_path, ReportConfig(quick=True, stages=stages, png=False))
    assert [s.name for s in rep.stages] == list(stages)
    heads = pd.read_csv(tmp_path / "heads" / "heads.csv")
    top = heads[heads.kind == "induction"].sort_values("score", ascending=False).iloc[0]
    summary = rep.stages[0].summary
    assert f"induction: L{top.layer}H{top['head']} ({top.score:.2f})" in summary
    texts = pd.read_csv(tmp_path / "influence" / "texts.csv")
    assert (texts["influence"] > 0).all()  # regression guard (one run): uniform induction heads hurt every shipped text
    qr = json.loads((tmp_path / "qr_heads" / "summary.json").read_text())
    assert qr["n_samples"] == 2 and qr["top"][0][2] > 0.1  # regression guard (one run): the top QR head clears 0.1
    for s in rep.stages:
        assert (
            s.seconds > 0 and (tmp_path / s.name / s.figures[0]).is_file()
        )  # timed, not bounded: no wall-clock limits

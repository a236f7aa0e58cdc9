"""QRHead: sample files (errors name the line), prompt spans, the shipped detection set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interp.analyses.qr_heads import QRConfig, combine, qr_scores, sample_scores
from interp.datasets.documents import QRSample, build_prompt, read_samples, shipped_samples
from interp.errors import InterpError


class _CharTokenizer:
    """One token per character (id = code point): spans are easy to check by hand."""

    def __call__(self, text, add_special_tokens=False):
        class _E:
            input_ids = [ord(c) for c in text]

        return _E()


def test_build_prompt_labels_every_span():
    ids, seg, rows = build_prompt(_CharTokenizer(), ["ab", "cde"], "why?")
    text = "".join(map(chr, ids))
    assert text == "Documents:\n[1] ab\n[2] cde\n\nQuery: why?\n"
    assert "".join(chr(i) for i, s in zip(ids, seg) if s == 0) == "ab\n"
    assert "".join(chr(i) for i, s in zip(ids, seg) if s == 1) == "cde\n"
    assert "".join(chr(ids[r]) for r in rows) == "why?"


def test_qr_scores_mean_over_rows():
    m = torch.tensor([[[0.2, 0.4], [0.6, 0.0]]])  # [head 1, rows 2, docs 2]
    assert torch.allclose(qr_scores(m), torch.tensor([[0.4, 0.2]]))


@pytest.mark.parametrize(
    "line, message",
    [
        ("{", "line 2 is not JSON"),
        (json.dumps({"query": "q", "documents": ["a", "b"]}), "line 2: need an object"),
        (json.dumps({"query": "q", "documents": ["a"], "gold": 0}), "line 2: documents must be"),
        (json.dumps({"query": " ", "documents": ["a", "b"], "gold": 0}), "line 2: query must be"),
        (json.dumps({"query": "q", "documents": ["a", "b"], "gold": 2}), "line 2: gold must be"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path, line, message):
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"query": "q", "documents": ["a", "b"], "gold": 1}) + "\n" + line + "\n")
    with pytest.raises(InterpError, match=message):
        read_samples(f)


def test_shipped_set_and_empty_file(tmp_path):
    s = shipped_samples()
    assert len(s) == 16 and all(len(x.documents) == 4 for x in s)
    assert sorted({x.gold for x in s}) == [0, 1, 2, 3]
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InterpError, match="no samples"):
        read_samples(tmp_path / "e.jsonl")


def test_sample_scores_calibrate_against_the_null_query():
    m = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.4]], dtype=torch.float64)  # [head, doc]
    null = torch.tensor([[0.6, 0.1, 0.1], [0.1, 0.1, 0.1]], dtype=torch.float64)
    gold, ok, raw = sample_scores(m, null, 1)
    assert torch.allclose(gold, torch.tensor([0.2, 0.1], dtype=torch.float64))
    assert ok.tolist() == [True, False] and torch.equal(raw, m[:, 1])  # head 0: s = (-0.1, 0.2, 0.1)
    gold, ok, _ = sample_scores(m, None, 1)
    assert torch.equal(gold, m[:, 1]) and ok.tolist() == [False, False]


def test_combine_averages_samples():
    samples = [QRSample("a", "q", ("x", "y"), 0), QRSample("b", "q", ("x", "y"), 1)]
    recs = [
        {"mass": [[[0.6, 0.2]]], "null": [[[0.2, 0.2]]]},  # one layer, one head
        {"mass": [[[0.3, 0.5]]], "null": [[[0.1, 0.1]]]},
    ]
    r = combine(QRConfig(), "m", (9,), 1, samples, recs)
    assert np.allclose(r.scores, [[(0.4 + 0.4) / 2]]) and r.accuracy.tolist() == [[1.0]]
    assert np.allclose(r.raw_gold[:, 0, 0], [0.6, 0.5]) and r.top(1)[0][:2] == (9, 0)
    assert r.summary()["n_samples"] == 2 and len(r.to_dataframe()) == 1

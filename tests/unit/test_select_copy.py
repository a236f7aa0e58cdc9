"""Select-and-copy: question files (errors name the line), option anchors, predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interp.analyses.select_copy import answer_margin, combine, head_predictions
from interp.datasets.questions import (
    Question,
    anchor_tokens,
    format_prompt,
    option_anchors,
    option_count,
    read_questions,
    shipped_questions,
)  # fmt: skip
from interp.errors import InterpError


def test_read_questions_and_anchors(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(
        json.dumps({"question": "2+2?", "options": ["3", "4", "5"], "answer": "B"}) + "\n\n"
        + json.dumps({"question": "Sky?", "options": ["blue", "red", "green"], "answer": 0}) + "\n"
    )  # fmt: skip
    qs = read_questions(f)
    assert [q.answer for q in qs] == [1, 0] and qs[0].n_options == 3 and qs[1].id == "line-3"
    p = qs[0].prompt
    nl = option_anchors(p, 3)
    assert [p[c] for c in nl] == ["\n"] * 3
    assert [p[:c].rsplit("\n", 1)[-1] for c in nl] == ["A. 3", "B. 4", "C. 5"]
    lab = option_anchors(p, 3, "label")
    assert [p[c] for c in lab] == ["A", "B", "C"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "line 2 is not JSON"),
        (json.dumps({"question": "x", "options": ["a", "b"]}), "line 2: need an object"),
        (json.dumps({"question": "x", "options": ["a"], "answer": 0}), "line 2: options must be"),
        (json.dumps({"question": "x", "options": ["a", "b"], "answer": "C"}), "line 2: answer 'C'"),
        (json.dumps({"question": "x", "options": ["a", "b"], "answer": True}), "line 2: answer True"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path, line, message):
    f = tmp_path / "q.jsonl"
    good = json.dumps({"question": "ok", "options": ["a", "b"], "answer": "A"})
    f.write_text(good + "\n" + line + "\n")
    with pytest.raises(InterpError, match=message):
        read_questions(f)


def test_empty_or_missing_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n \n")
    with pytest.raises(InterpError, match="is empty"):
        read_questions(tmp_path / "e.jsonl")
    with pytest.raises(InterpError, match="not found"):
        read_questions(tmp_path / "missing.jsonl")


def test_shipped_mcq_has_option_lines():
    qs = shipped_questions()
    assert len(qs) == 60 and {q.n_options for q in qs} == {4}
    for q in qs[:5]:
        assert len(option_anchors(q.prompt, 4)) == 4
    with pytest.raises(InterpError, match="not multiple choice"):
        shipped_questions("sentiment")


def test_prompt_without_option_lines_raises():
    with pytest.raises(InterpError, match="own lines"):
        option_anchors("Question: x A. a B. b Answer:", 2)
    assert format_prompt("q", ["a", "b"]).endswith("A. a\nB. b\nAnswer:")


def test_predictions_are_argmax_first_on_ties():
    s = torch.tensor([[0.1, 0.5, 0.5], [2.0, -1.0, 0.0]])
    assert head_predictions(s).tolist() == [1, 0]


def test_chance_best_grows_with_fewer_questions():
    import numpy as np

    from interp.analyses.select_copy import SelectCopyConfig, SelectCopyResult

    def result(n_q):
        z = np.zeros((n_q, 30, 9), bool)
        return SelectCopyResult(
            SelectCopyConfig(),
            "m",
            tuple(range(30)),
            9,
            tuple(map(str, range(n_q))),
            4,
            z,
            z,
            z[:, 0, 0],
            z.astype(float),
        )

    few, many = result(20).chance_best(), result(2000).chance_best()
    assert 0.25 < many < 0.30 < few < 0.7  # 270 chance heads: the best is far above 0.25 on 20 questions


def test_anchor_tokens_map_characters_through_offsets():
    offsets = [(0, 3), (3, 4), (4, 9), (9, 10), (10, 10)]  # an empty span covers nothing
    assert anchor_tokens(offsets, [0, 3, 8, 9]) == [0, 1, 2, 3]
    with pytest.raises(InterpError, match="no token covers character 10"):
        anchor_tokens(offsets, [10])


def test_option_count_needs_one_count():
    q = lambda n: Question("x", "p", n, 0)  # noqa: E731
    assert option_count([q(4), q(4)]) == 4
    with pytest.raises(InterpError, match="different numbers of options"):
        option_count([q(4), q(3)])


def test_answer_margin_and_combine():
    s = torch.tensor([[0.1, 0.5, 0.2], [2.0, -1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(answer_margin(s, 1), torch.tensor([0.3, -3.0], dtype=torch.float64))
    qs = [Question("a", "p", 3, 1), Question("b", "p", 3, 0)]
    rec = {"qk": [s.tolist()], "attn": [[[0.0, 0.1, 0.2], [0.3, 0.2, 0.1]]], "choice": 1}  # one layer, two heads
    from interp.analyses.select_copy import SelectCopyConfig

    r = combine(SelectCopyConfig(), "m", (7,), 2, qs, [rec, rec])
    assert r.qk_correct[:, 0].tolist() == [[True, False], [False, True]]
    assert r.attn_correct[:, 0].tolist() == [[False, False], [False, True]]
    assert r.model_correct.tolist() == [True, False] and r.n_options == 3
    assert np.allclose(r.qk_accuracy, [[0.5, 0.5]]) and r.top(1, "attn") == [(7, 1, 0.5)]
    assert np.allclose(r.qk_margin[1, 0], [0.1 - 0.5, 2.0 - 0.0])
    assert r.questions_dataframe().model_correct.tolist() == [True, False]
    assert len(r.summary()["top_qk"]) == 2 and len(r.summary(1)["top_qk"]) == 1

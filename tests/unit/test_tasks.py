"""IOI and Colored Objects generators: equal lengths, single-token answers, ABBA/BABA balance,
the corruptions' properties, reproducibility, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from interp.datasets.colored_objects import ColoredObjectsConfig, colored_objects
from interp.datasets.ioi import IOIConfig, ioi
from interp.datasets.tasks import TaskBatch, make_task, task_from_prompts
from interp.errors import InterpError


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from interp.models import _embedded_weights_dir

    return AutoTokenizer.from_pretrained(_embedded_weights_dir())


def _one(tok, word):
    ids = tok(word, add_special_tokens=False).input_ids
    assert len(ids) == 1, word
    return ids[0]


@pytest.mark.parametrize("n", [10, 7])
def test_ioi_shapes_answers_and_balance(tok, n):
    b = ioi(tok, IOIConfig(n=n, seed=3))
    assert b.clean.shape == b.corrupt.shape == (n, b.n_pos)
    assert len(b.pos_labels) == b.n_pos
    assert b.order.count("ABBA") - b.order.count("BABA") == n % 2
    rows = torch.arange(n)
    # clean prompts: IO once, S twice (S1, S2), answers are those tokens
    assert torch.equal(b.clean[rows, b.roles["IO"]], b.correct)
    assert torch.equal(b.clean[rows, b.roles["S1"]], b.wrong)
    assert torch.equal(b.clean[rows, b.roles["S2"]], b.wrong)
    for i in range(n):
        correct, wrong = b.answers[i]
        assert _one(tok, correct) == int(b.correct[i]) and _one(tok, wrong) == int(b.wrong[i])
        assert (b.roles["IO"][i] < b.roles["S1"][i]) == (b.order[i] == "ABBA")
        # corrupted: the same template with three different names, none of them IO or S
        differ = (b.clean[i] != b.corrupt[i]).nonzero().flatten().tolist()
        assert sorted(differ) == sorted({int(b.roles["IO"][i]), int(b.roles["S1"][i]), int(b.roles["S2"][i])})
        names = [int(b.corrupt[i, p]) for p in differ]
        assert len(set(names)) == 3
        assert not {int(b.correct[i]), int(b.wrong[i])} & set(b.corrupt[i].tolist())


def test_ioi_is_seeded(tok):
    a, b, c = (ioi(tok, IOIConfig(n=6, seed=s)) for s in (1, 1, 2))
    assert a.clean_text == b.clean_text and a.corrupt_text == b.corrupt_text
    assert a.clean_text != c.clean_text


def test_colored_objects(tok):
    b = colored_objects(tok, ColoredObjectsConfig(n=12, seed=4))
    assert b.clean.shape == b.corrupt.shape
    rows = torch.arange(b.n)
    assert torch.equal(b.clean[rows, b.roles["colour"]], b.correct)
    assert torch.equal(b.clean[rows, b.roles["item"]], b.clean[rows, b.roles["query"]])
    assert torch.equal(b.clean[rows, b.roles["distractor"]], b.wrong)  # another item's colour
    # corrupted: the asked item's and the distractor's colours exchanged, nothing else
    assert torch.equal(b.corrupt[rows, b.roles["colour"]], b.wrong)
    assert torch.equal(b.corrupt[rows, b.roles["distractor"]], b.correct)
    for i in range(b.n):
        differ = (b.clean[i] != b.corrupt[i]).nonzero().flatten().tolist()
        assert sorted(differ) == sorted([int(b.roles["colour"][i]), int(b.roles["distractor"][i])])
        assert int(b.roles["colour"][i]) + 1 == int(b.roles["item"][i])  # "a <colour> <object>"
    assert len({int(p) for p in b.roles["item"]}) > 1  # the asked item varies


def test_make_task_and_unknown(tok):
    assert make_task(tok, "colored-objects", n=3).task == "colored-objects"
    with pytest.raises(InterpError, match="unknown task 'ioi2'"):
        make_task(tok, "ioi2")


def test_different_lengths_explain_the_fix(tok):
    with pytest.raises(InterpError, match="same length"):
        task_from_prompts(
            tok, ["When Mary and John went"], ["When Maximilian and Bartholomew went"], [" Mary"], [" John"]
        )
    with pytest.raises(InterpError, match="different lengths"):
        task_from_prompts(tok, ["a b c", "a b"], ["a b d", "a c"], [" x", " x"], [" y", " y"])


def test_answers_must_be_single_tokens(tok):
    with pytest.raises(InterpError, match="not one"):
        task_from_prompts(tok, ["When Mary went"], ["When John went"], [" Maximilianus"], [" John"])
    with pytest.raises(InterpError, match="same correct and wrong"):
        task_from_prompts(tok, ["When Mary went"], ["When John went"], [" Mary"], [" Mary"])
    with pytest.raises(InterpError, match="prompt 1: the clean prompt is empty"):
        task_from_prompts(tok, ["When Mary went", ""], ["When John went", ""], [" Mary"] * 2, [" John"] * 2)


def test_user_word_lists_are_checked(tok):
    with pytest.raises(InterpError, match="not single tokens"):
        ioi(tok, IOIConfig(n=2, names=("Mary", "John", "Tom", "James", "Anna", "Bartholomewson")))
    with pytest.raises(InterpError, match="needs 5"):
        ioi(tok, IOIConfig(n=2, names=("Mary", "John", "Tom")))
    with pytest.raises(InterpError, match="different lengths"):
        ioi(
            tok,
            IOIConfig(n=2, templates=("When {N1} and {N2} went out, {S} said to", "{N1} and {N2} met; {S} waved to")),
        )
    with pytest.raises(InterpError, match="at least 2 items"):
        colored_objects(tok, ColoredObjectsConfig(n=2, n_items=1))


def test_from_tokens_checks_shapes():
    with pytest.raises(InterpError, match="same shape"):
        TaskBatch.from_tokens(torch.zeros(2, 5), torch.zeros(2, 6), [1, 2], [3, 4])
    b = TaskBatch.from_tokens(torch.zeros(2, 5), torch.ones(2, 5), [1, 2], [3, 4])
    assert b.n == 2 and b.n_pos == 5


# --------------------------------------------------------------------------------------------
# Your own prompt pairs from a JSONL file (`interp patch pairs`)
# --------------------------------------------------------------------------------------------


def _write(tmp_path, lines, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pair(
    clean="When Mary and John went to the store, John gave a drink to", corrupt=None, correct=" Mary", wrong=" John"
):
    import json

    corrupt = corrupt if corrupt is not None else clean.replace("Mary", "Anna").replace("John", "Paul")
    return json.dumps({"clean": clean, "corrupt": corrupt, "correct": correct, "wrong": wrong})


def test_pairs_file_reads_into_a_batch(tok, tmp_path):
    import json

    from interp.datasets.tasks import task_from_jsonl

    extra = json.dumps(
        {
            "id": "mine",
            "clean": "When Tom and Kate went to the park, Kate gave a ball to",
            "corrupt": "When Adam and Lucy went to the park, Lucy gave a ball to",
            "correct": " Tom",
            "wrong": " Kate",
        }
    )
    path = _write(tmp_path, [_pair(), "", "   ", extra], name="my-task.jsonl")
    b = task_from_jsonl(tok, path)
    assert b.task == "my-task" and b.n == 2
    want_clean = tok("When Tom and Kate went to the park, Kate gave a ball to", add_special_tokens=False).input_ids
    want_corrupt = tok("When Adam and Lucy went to the park, Lucy gave a ball to", add_special_tokens=False).input_ids
    assert b.clean[1].tolist() == want_clean and b.corrupt[1].tolist() == want_corrupt
    assert b.correct.tolist() == [_one(tok, " Mary"), _one(tok, " Tom")]
    assert b.wrong.tolist() == [_one(tok, " John"), _one(tok, " Kate")]
    assert b.answers[1] == (" Tom", " Kate") and len(b.pos_labels) == b.n_pos


def test_shipped_example_pairs_file_is_valid(tok):
    from importlib.resources import files

    from interp.datasets.tasks import task_from_jsonl

    path = files("interp") / "data" / "capital_pairs.jsonl"
    b = task_from_jsonl(tok, path)
    assert b.n >= 8 and b.task == "capital_pairs"
    assert bool((b.clean != b.corrupt).any(dim=1).all())  # every pair is actually corrupted
    assert bool((b.correct != b.wrong).all())


@pytest.mark.parametrize(
    "lines,message",
    [
        (["{not json"], r"pairs\.jsonl line 1 is not valid JSON"),
        ([_pair(), "", '["a", "b"]'], r"pairs\.jsonl line 3 holds a JSON list, not an object"),
        ([_pair(), '{"clean": "a", "corrupt": "b", "correct": " x"}'], r"pairs\.jsonl line 2 lacks 'wrong'"),
        (
            [_pair(), _pair(), '{"clean": "a", "corrupt": "b", "correct": 3, "wrong": ""}'],
            r"pairs\.jsonl line 3: 'correct', 'wrong' must be a non-empty string",
        ),
        (["", "  "], "holds no pairs"),
    ],
)
def test_pairs_file_format_errors_name_the_line(tmp_path, lines, message):
    from interp.datasets.tasks import read_pairs

    with pytest.raises(InterpError, match=message):
        read_pairs(_write(tmp_path, lines))


def test_missing_pairs_file(tmp_path):
    from interp.datasets.tasks import read_pairs

    with pytest.raises(InterpError, match="not found: pass a JSONL file"):
        read_pairs(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    "bad,message",
    [
        (
            _pair(corrupt="When Maximilian and Bartholomew went to the store, Bartholomew gave a drink to"),
            r"pairs\.jsonl line 3: the clean prompt has \d+ tokens but the corrupted prompt has \d+.*same length",
        ),
        (
            _pair(clean="When Mary and John went to the big store, John gave a drink to"),
            r"different lengths .*most have \d+ tokens but pairs\.jsonl line 3 \(\d+\) do not",
        ),
        (_pair(correct=" Maximilianus"), r"pairs\.jsonl line 3: answer ' Maximilianus' is \d+ tokens .* not one"),
        (_pair(wrong=" Mary"), r"pairs\.jsonl line 3: the same correct and wrong answer"),
    ],
)
def test_pairs_file_token_checks_name_the_line(tok, tmp_path, bad, message):
    from interp.datasets.tasks import task_from_jsonl

    path = _write(tmp_path, [_pair(), "", bad, _pair()])  # line 2 blank: numbers are file lines, not pair indices
    with pytest.raises(InterpError, match=message):
        task_from_jsonl(tok, path)


def test_generator_configs_are_checked_when_built():
    with pytest.raises(InterpError, match="at least one prompt"):
        IOIConfig(n=0)
    with pytest.raises(InterpError, match="lacks a placeholder"):
        IOIConfig(templates=("When {N1} met {N2},",))
    assert IOIConfig(names=("Mary", "John")).names == ("Mary", "John")
    with pytest.raises(InterpError, match="needs {items} and {query}"):
        ColoredObjectsConfig(template="Which color is it?")
    assert ColoredObjectsConfig(n=3).settings()["template"].startswith("On the desk")


def test_pairs_digest_changes_with_the_file(tmp_path):
    from interp.datasets.tasks import pairs_digest

    path = _write(tmp_path, [_pair()])
    before = pairs_digest(path)
    assert len(before) == 16 and pairs_digest(path) == before
    _write(tmp_path, [_pair(), _pair()])
    assert pairs_digest(path) != before

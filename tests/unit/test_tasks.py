"""IOI and Colored Objects generators: equal lengths, single-token answers, ABBA/BABA balance,
the corruptions' properties, reproducibility, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.tasks import (
    ColoredObjectsConfig,
    IOIConfig,
    TaskBatch,
    colored_objects,
    ioi,
    make_task,
    task_from_prompts,
)
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
        task_from_prompts(tok, ["When Mary and John went"], ["When Maximilian and Bartholomew went"], [" Mary"], [" John"])
    with pytest.raises(InterpError, match="different lengths"):
        task_from_prompts(tok, ["a b c", "a b"], ["a b d", "a c"], [" x", " x"], [" y", " y"])


def test_answers_must_be_single_tokens(tok):
    with pytest.raises(InterpError, match="not one"):
        task_from_prompts(tok, ["When Mary went"], ["When John went"], [" Maximilianus"], [" John"])
    with pytest.raises(InterpError, match="same correct and wrong"):
        task_from_prompts(tok, ["When Mary went"], ["When John went"], [" Mary"], [" Mary"])


def test_user_word_lists_are_checked(tok):
    with pytest.raises(InterpError, match="not single tokens"):
        ioi(tok, IOIConfig(n=2, names=("Mary", "John", "Tom", "James", "Anna", "Bartholomewson")))
    with pytest.raises(InterpError, match="needs 5"):
        ioi(tok, IOIConfig(n=2, names=("Mary", "John", "Tom")))
    with pytest.raises(InterpError, match="different lengths"):
        ioi(tok, IOIConfig(n=2, templates=("When {N1} and {N2} went out, {S} said to", "{N1} and {N2} met; {S} waved to")))
    with pytest.raises(InterpError, match="at least 2 items"):
        colored_objects(tok, ColoredObjectsConfig(n=2, n_items=1))


def test_from_tokens_checks_shapes():
    with pytest.raises(InterpError, match="same shape"):
        TaskBatch.from_tokens(torch.zeros(2, 5), torch.zeros(2, 6), [1, 2], [3, 4])
    b = TaskBatch.from_tokens(torch.zeros(2, 5), torch.ones(2, 5), [1, 2], [3, 4])
    assert b.n == 2 and b.n_pos == 5

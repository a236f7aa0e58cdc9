"""Needle-in-a-haystack sample builder: exact spans, depth placement, sentence boundaries, bad input.

A toy tokenizer (words and punctuation, leading whitespace attached, like byte-level BPE) stands
in for a real one, so every expectation below is computed by hand from the segments.
"""

from __future__ import annotations

import json
import re

import pytest

from interp.datasets.haystack import Haystack, load_haystack, read_haystack, split_sentences, stdlib_sentences
from interp.datasets.needles import (
    Needle,
    PromptTemplate,
    build_sample,
    build_samples,
    insertion_index,
    load_needles,
)
from interp.errors import InterpError
from interp.hooks.prefix import prefix_tree, tree_cost

_VOCAB: dict[str, int] = {}
_PIECE = re.compile(r"\s*[A-Za-z0-9']+|\s*[^A-Za-z0-9'\s]|\s+")


def encode(text: str) -> list[int]:
    return [_VOCAB.setdefault(p, len(_VOCAB) + 1) for p in _PIECE.findall(text)]


def decode(ids) -> str:
    inv = {v: k for k, v in _VOCAB.items()}
    return "".join(inv[i] for i in ids)


def encode_many(texts):
    return [encode(t) for t in texts]


NEEDLE = Needle(
    "soup", "The secret ingredient in the soup is smoked paprika.", "What is the secret ingredient?", "smoked paprika"
)
SENTENCES = tuple(f"Sentence number {i} talks about topic {i} at length." for i in range(60))  # 10 tokens each
HAY = Haystack.tokenize(SENTENCES, encode_many, "toy")
CHAT = PromptTemplate.from_chat(lambda user: f"<s>user: {user}</s><s>assistant:")
PLAIN = PromptTemplate.from_chat(None)


def test_toy_tokenizer_sentence_length():
    assert all(len(ids) == 10 for ids in HAY.ids)
    assert HAY.n_tokens == 600


@pytest.mark.parametrize("template", [CHAT, PLAIN], ids=["chat", "plain"])
@pytest.mark.parametrize("response", ["needle", "answer"])
def test_spans_are_exact(template, response):
    s = build_sample(encode, template, HAY, NEEDLE, 300, 0.5, n_ctx=1000, response=response)
    a0, a1 = s.answer_span
    n0, n1 = s.needle_span
    assert decode(s.prompt_ids[n0:n1]) == " " + NEEDLE.needle
    assert decode(s.prompt_ids[a0:a1]) == " " + NEEDLE.answer
    assert n0 < a0 < a1 < n1
    r0, r1 = s.response_answer_span
    assert s.response_ids[r0:r1] == s.prompt_ids[a0:a1]  # same ids: a copy can match token for token
    if response == "needle":
        assert decode(s.response_ids) == template.response_prefix + NEEDLE.needle
    else:
        assert s.response_ids == s.prompt_ids[a0:a1]
    assert s.input_ids == s.prompt_ids + s.response_ids


def test_prompt_ends_with_question_and_template():
    s = build_sample(encode, CHAT, HAY, NEEDLE, 300, 0.5, n_ctx=1000)
    text = decode(s.prompt_ids)
    assert text.startswith("<s>user: Below is a long document.")
    assert text.endswith("Question: What is the secret ingredient?</s><s>assistant:")
    plain = decode(build_sample(encode, PLAIN, HAY, NEEDLE, 300, 0.5, n_ctx=1000).prompt_ids)
    assert plain.endswith("Question: What is the secret ingredient?\nAnswer:")


def test_length_is_filled_with_whole_sentences():
    for length in (200, 305, 450):
        s = build_sample(encode, CHAT, HAY, NEEDLE, length, 0.3, n_ctx=1000)
        assert length - 10 < s.n_prompt <= length  # short by less than one 10-token sentence


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.77, 1.0])
def test_depth_placement_at_a_sentence_boundary(depth):
    s = build_sample(encode, CHAT, HAY, NEEDLE, 400, depth, n_ctx=1000)
    head = len(encode(CHAT.head))
    tail = len(encode(CHAT.tail(NEEDLE.question)))
    before = s.needle_span[0] - head
    after = s.n_prompt - tail - s.needle_span[1]
    total = before + after
    assert before % 10 == 0 and after % 10 == 0  # whole sentences on both sides
    k = before // 10
    assert s.prompt_ids[head : s.needle_span[0]] == tuple(t for ids in HAY.ids[:k] for t in ids)
    # the last boundary at or before depth x haystack
    assert before <= depth * total + 1e-9 < before + 10 or (depth == 1.0 and after == 0)
    assert s.haystack_depth == pytest.approx(before / total)


def test_insertion_index_by_hand():
    counts = [2, 3, 5]
    assert insertion_index(counts, 0.0) == 0
    assert insertion_index(counts, 0.4) == 1  # target 4: boundaries 0, 2, 5, 10
    assert insertion_index(counts, 0.5) == 2  # target 5 hits a boundary exactly
    assert insertion_index(counts, 0.99) == 2
    assert insertion_index(counts, 1.0) == 3


def test_answer_opening_the_needle():
    needle = Needle("o", "Paprika is the secret.", "What is the secret?", "Paprika")
    s = build_sample(encode, PLAIN, HAY, needle, 200, 0.5, n_ctx=1000)
    assert s.answer_span[0] == s.needle_span[0]
    assert decode(s.prompt_ids[slice(*s.answer_span)]) == " Paprika"
    assert (
        s.response_ids[slice(*s.response_answer_span)] == s.prompt_ids[slice(*s.answer_span)]
    )  # " Paprika" after "Answer:"
    chat = build_sample(encode, CHAT, HAY, needle, 200, 0.5, n_ctx=1000)
    assert decode(chat.response_ids[slice(*chat.response_answer_span)]) == "Paprika"  # no space after the chat header


def test_length_at_the_context_leaves_room_for_the_response():
    # n_ctx 300: a 300-token prompt would leave no room for the (10-token) response
    s = build_sample(encode, CHAT, HAY, NEEDLE, 300, 0.5, n_ctx=300)
    assert s.n_prompt + len(s.response_ids) <= 300
    assert 300 - len(s.response_ids) - 10 < s.n_prompt  # still filled to within one sentence
    roomy = build_sample(encode, CHAT, HAY, NEEDLE, 300, 0.5, n_ctx=1000)
    assert roomy.n_prompt > s.n_prompt  # below the context, the prompt keeps its full length
    with pytest.raises(InterpError, match="exceeds the model's context of 300 tokens: use --lengths up to 300"):
        build_sample(encode, CHAT, HAY, NEEDLE, 301, 0.5, n_ctx=300)


def test_grid_order_and_keys():
    needles = [NEEDLE, Needle("b", "Bob owns a green kite.", "What does Bob own?", "a green kite")]
    samples = build_samples(encode, CHAT, HAY, needles, (200, 300), (0.1, 0.9), n_ctx=1000)
    assert [s.key for s in samples[:4]] == ["L200-d0.10-soup", "L200-d0.10-b", "L200-d0.90-soup", "L200-d0.90-b"]
    assert len({s.key for s in samples}) == 8


def test_bad_input():
    with pytest.raises(InterpError, match="does not occur verbatim"):
        Needle("x", "The cat sat.", "Who sat?", "the dog")
    with pytest.raises(InterpError, match="non-empty"):
        Needle("x", "The cat sat.", "", "cat")
    with pytest.raises(InterpError, match="exceeds the model's context"):
        build_sample(encode, CHAT, HAY, NEEDLE, 2000, 0.5, n_ctx=1024)
    with pytest.raises(InterpError, match="too short"):
        build_sample(encode, CHAT, HAY, NEEDLE, 20, 0.5, n_ctx=1024)
    with pytest.raises(InterpError, match="haystack .* has only 600 tokens"):
        build_sample(encode, CHAT, HAY, NEEDLE, 900, 0.5, n_ctx=1024)
    with pytest.raises(InterpError, match="depth"):
        build_sample(encode, CHAT, HAY, NEEDLE, 300, 1.5, n_ctx=1024)
    with pytest.raises(InterpError, match="empty"):
        Haystack.tokenize((), encode_many, "none")


def test_load_needles(tmp_path):
    good = tmp_path / "n.jsonl"
    good.write_text(
        json.dumps({"id": "a", "needle": "Bob owns a kite.", "question": "What?", "answer": "a kite"}) + "\n\n"
    )
    assert load_needles(good)[0].answer == "a kite"
    shipped = load_needles()
    assert len(shipped) >= 3 and all(n.answer in n.needle for n in shipped)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"needle": "Bob owns a kite.", "question": "What?", "answer": "a dog"}) + "\n")
    with pytest.raises(InterpError, match="does not occur"):
        load_needles(bad)
    bad.write_text("{not json\n")
    with pytest.raises(InterpError, match="not valid JSON"):
        load_needles(bad)
    bad.write_text(json.dumps({"needle": "x y", "answer": "x"}) + "\n")
    with pytest.raises(InterpError, match="missing field"):
        load_needles(bad)
    bad.write_text("\n")
    with pytest.raises(InterpError, match="no needles"):
        load_needles(bad)
    with pytest.raises(InterpError, match="cannot read"):
        load_needles(tmp_path / "missing.jsonl")


def test_read_haystack(tmp_path):
    f = tmp_path / "h.txt"
    f.write_text("First sentence here. Second one!\n\nA new paragraph? Yes.")
    assert read_haystack([f]) == ("First sentence here.", "Second one!", "A new paragraph?", "Yes.")
    with pytest.raises(InterpError, match="cannot read"):
        read_haystack([tmp_path / "nope.txt"])
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InterpError, match="cannot read"):
        read_haystack([binary])
    empty = tmp_path / "e.txt"
    empty.write_text("  \n\n ")
    with pytest.raises(InterpError, match="hold no text"):
        read_haystack([empty])


def test_load_haystack_files_or_the_stdlib_default(tmp_path):
    f = tmp_path / "h.txt"
    f.write_text("One sentence. Two sentences.")
    assert load_haystack([f]) == (("One sentence.", "Two sentences."), str(f))
    sentences, name = load_haystack(())
    assert sentences == stdlib_sentences() and name == "Python standard-library docstrings"
    with pytest.raises(InterpError, match="cannot read"):
        load_haystack([tmp_path / "nope.txt"])


def test_split_sentences():
    assert split_sentences("A b.  C d?\nE f!") == ["A b.", "C d?", "E f!"]


def test_stdlib_haystack_is_clean_prose_and_deterministic():
    sents = stdlib_sentences()
    assert sents == stdlib_sentences.__wrapped__()  # same text when collected again
    assert len(sents) > 500 and sum(len(s.split()) for s in sents) > 10_000  # room for 8k-token prompts
    assert len(set(sents)) == len(sents)
    for s in sents:
        assert s[0].isupper() and s.endswith(".") and "\n" not in s and ">>>" not in s
        assert s.count(".") == 1


def _common(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_grid_samples_share_token_prefixes_up_to_the_earlier_needle():
    kite = Needle("kite", "Bob owns a green kite.", "What does Bob own?", "a green kite")
    samples = build_samples(encode, CHAT, HAY, [NEEDLE, kite], (200, 300), (0.0, 0.5, 1.0), n_ctx=1000)
    head = len(encode(CHAT.head))
    by_key = {s.key: s for s in samples}
    for a in samples:
        for b in samples:
            if a is b:
                continue
            first = min(a.needle_span[0], b.needle_span[0])
            if a.needle_id != b.needle_id or a.needle_span[0] != b.needle_span[0]:
                # the toy haystack sentences open with " Sentence", the needles with " The" / " Bob"
                assert _common(a.input_ids, b.input_ids) == first
            assert a.input_ids[:first] == b.input_ids[:first]
            assert a.input_ids[:head] == tuple(encode(CHAT.head))
    # depth 0: the same needle at both lengths; the shorter prompt shares everything up to its question
    short, long = by_key["L200-d0.00-soup"], by_key["L300-d0.00-soup"]
    tail = len(encode(CHAT.tail(NEEDLE.question)))
    assert short.needle_span == long.needle_span
    assert _common(short.input_ids, long.input_ids) == short.n_prompt - tail
    # the tree of the grid computes each shared position once
    tree = prefix_tree([s.input_ids for s in samples])
    assert tree_cost(tree) < sum(len(s.input_ids) for s in samples)
    assert tree.tokens == tuple(encode(CHAT.head))  # depth 0 puts a needle right after the head

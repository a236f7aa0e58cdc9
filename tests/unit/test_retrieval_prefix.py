"""Shared-prefix tree over token sequences: trees drawn by hand, and a brute-force count of
distinct prefixes. (The needle builder's token-level shared prefixes are tested in
test_retrieval_needles.py.)"""

from __future__ import annotations

import random

import pytest

from interp.errors import InterpError
from interp.hooks.prefix import PrefixNode, prefix_tree, tree_cost


def _shape(node: PrefixNode):
    """(start, tokens, members, ends, children) as plain tuples, for comparing with a drawing."""
    return (node.start, node.tokens, node.members, node.ends, tuple(_shape(c) for c in node.children))


def test_tree_by_hand():
    seqs = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7], [9]]
    tree = prefix_tree(seqs)
    assert _shape(tree) == (
        0,
        (),
        (0, 1, 2, 3),
        (),
        (
            (
                0,
                (1, 2),
                (0, 1, 2),
                (),
                (
                    (
                        2,
                        (3,),
                        (0, 1),
                        (),
                        (
                            (3, (4,), (0,), (0,), ()),
                            (3, (5, 6), (1,), (1,), ()),
                        ),
                    ),
                    (2, (7,), (2,), (2,), ()),
                ),
            ),
            (0, (9,), (3,), (3,), ()),
        ),
    )
    assert tree_cost(tree) == 2 + 1 + 1 + 2 + 1 + 1  # each distinct prefix position once
    assert [n.start for n in tree.walk()] == [0, 0, 2, 3, 3, 2, 0]  # parents before children


def test_duplicates_and_a_sequence_that_prefixes_another():
    tree = prefix_tree([[5, 6], [5, 6, 7], [5, 6]])
    assert _shape(tree) == (0, (5, 6), (0, 1, 2), (0, 2), ((2, (7,), (1,), (1,), ()),))
    single = prefix_tree([[3, 1, 4]])
    assert _shape(single) == (0, (3, 1, 4), (0,), (0,), ())


def test_paths_rebuild_every_sequence_and_cost_counts_distinct_prefixes():
    rng = random.Random(0)
    trunk = [rng.randrange(50) for _ in range(30)]
    seqs = []
    for _ in range(40):  # sequences that share random-length pieces of a trunk, then diverge
        cut = rng.randrange(0, 31)
        seqs.append(trunk[:cut] + [rng.randrange(3) for _ in range(rng.randrange(1, 8))])
    tree = prefix_tree(seqs)
    distinct = {tuple(s[: i + 1]) for s in seqs for i in range(len(s))}
    assert tree_cost(tree) == len(distinct)
    for i, seq in enumerate(seqs):
        path, node = [], tree
        while True:
            assert i in node.members and node.start == len(path)
            path.extend(node.tokens)
            if i in node.ends:
                break
            (node,) = [c for c in node.children if i in c.members]
        assert path == seq


def test_tree_bad_input():
    with pytest.raises(InterpError, match="no sequences"):
        prefix_tree([])
    with pytest.raises(InterpError, match=r"sequence\(s\) \[1\] are empty"):
        prefix_tree([[1], []])

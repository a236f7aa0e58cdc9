"""Shared-prefix reuse: each distinct token prefix of a set of sequences is computed once.

The samples of a needle grid share long token prefixes. Every sample of one haystack opens with
the template and the haystack text before its needle, so two samples share their prompt up to
the earlier of their two needles; the needles at one (length, depth) share everything before
the needle; samples with the same needle at the same sentence (depth 0 at every length) share
everything up to the question. `prefix_tree` finds these prefixes on token ids (longest common
*token* prefixes, never strings: two texts that agree as strings may tokenise differently) and
arranges the sequences in a radix tree whose edges are runs of tokens shared by the same
sequences.

The walk over that tree with a reused KV cache, `interp.experiments._prefix_walk.tree_rows`,
computes each edge once as a pass on top of its ancestors' cached keys and values (this module
is the pure part: the tree and its cost, no model). It is exact because attention is causal:
the keys, values and hidden states at a position depend only on the tokens up to it, so a
cached prefix holds exactly what a full forward pass computes there.

What it cannot save: everything after a sample's first private token (for a needle sample,
from its needle to its end) is computed for that sample alone, and those are the late,
expensive positions (each attends to all earlier keys). The saving is largest where samples
share long prefixes and the private suffixes are short (deep needles, many needles per depth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from interp.errors import InterpError

__all__ = ["PrefixNode", "prefix_tree", "tree_cost"]


# --------------------------------------------------------------------------------------------
# the tree (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefixNode:
    """One edge of the radix tree over token sequences.

    Attributes:
        start: position of the edge's first token in every sequence passing through it.
        tokens: the token ids of positions [start, start + len(tokens)), the same in every member.
        members: indices (into the input list) of the sequences passing through, ascending.
        ends: the members that end exactly at this edge's last token.
        children: edges that continue it, ordered by their smallest member.
    """

    start: int
    tokens: tuple[int, ...]
    members: tuple[int, ...]
    ends: tuple[int, ...]
    children: tuple["PrefixNode", ...] = ()

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)

    def walk(self) -> Iterator["PrefixNode"]:
        """Every edge, parents before children (the order the walk computes them in)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def prefix_tree(sequences: Sequence[Sequence[int]]) -> PrefixNode:
    """Radix tree of token sequences: shared token prefixes become shared edges.

    The root's ``tokens`` is the longest common prefix of all sequences (possibly empty, then
    ``start`` = 0 and its children diverge at the first token). Identical sequences end at the
    same edge; a sequence that is a prefix of another ends at an inner edge.

    Raises:
        InterpError: no sequence, or an empty one.
    """
    if len(sequences) == 0:
        raise InterpError("no sequences given: pass at least one token sequence")
    arrays = [np.asarray(list(s), dtype=np.int64) for s in sequences]
    empty = [i for i, a in enumerate(arrays) if a.size == 0]
    if empty:
        raise InterpError(f"sequence(s) {empty[:5]} are empty: every sequence needs at least one token")
    return _node(arrays, list(range(len(arrays))), 0)


def _node(arrays: list[np.ndarray], members: list[int], start: int) -> PrefixNode:
    """The edge from ``start`` shared by ``members`` (recursion depth = branchings on a path)."""
    first = arrays[members[0]]
    end = min(arrays[m].size for m in members)
    for m in members[1:]:
        differ = np.flatnonzero(arrays[m][start:end] != first[start:end])
        if differ.size:
            end = start + int(differ[0])
    ends = [m for m in members if arrays[m].size == end]
    groups: dict[int, list[int]] = {}
    for m in members:
        if arrays[m].size > end:
            groups.setdefault(int(arrays[m][end]), []).append(m)
    children = sorted((_node(arrays, g, end) for g in groups.values()), key=lambda c: c.members[0])
    return PrefixNode(start, tuple(int(t) for t in first[start:end]), tuple(members), tuple(ends), tuple(children))


def tree_cost(tree: PrefixNode) -> int:
    """Token positions the walk computes: the sum of the edge lengths (each prefix once)."""
    return sum(len(node.tokens) for node in tree.walk())

"""Shared-prefix reuse: each distinct token prefix of a set of sequences is computed once.

The samples of a needle grid share long token prefixes. Every sample of one haystack opens with
the template and the haystack text before its needle, so two samples share their prompt up to
the earlier of their two needles; the needles at one (length, depth) share everything before
the needle; samples with the same needle at the same sentence (depth 0 at every length) share
everything up to the question. `prefix_tree` finds these prefixes on token ids (longest common
*token* prefixes, never strings: two texts that agree as strings may tokenise differently) and
arranges the sequences in a radix tree whose edges are runs of tokens shared by the same
sequences (pure, no model; `tree_cost` counts the positions the walk computes).

`tree_rows` walks that tree depth first with
one KV cache: each edge is one forward pass over its own tokens on top of the cached keys and
values of its ancestors (`LoadedModel.logits_at` with ``past``), and the cache is cropped back on
the way up (`LoadedModel.crop_cache`), so every distinct prefix position is computed once. For
each sequence it returns, at the positions asked for, the greedy token (argmax of the logits;
only those positions are unembedded) and, optionally, a per-layer statistic of those query rows
computed by a callback from the layer's q and the keys the rows see (cached ones included).
An ``at_end`` callback can instead take over the cache where a sequence ends (the greedy
decode loop starts there: its prefill is then shared too).

Why this is exact: attention is causal, so a cached prefix holds exactly what a full forward
pass computes there. The walk runs the same arithmetic in another order; floating-point results
agree to rounding (the tests check that top-1 positions and greedy tokens are identical to one
full pass per sequence). The cache (`LoadedModel.new_cache`) holds every key (no sliding-window
eviction); the model's own mask applies any sliding window, so windowed models are exact too,
and the callback sees absolute key positions.

Batching: the leaves below one node (e.g. the three needles at one length and depth) run as one
right-padded batch over copies of the node's cache (`LoadedModel.repeat_cache`). Padding after
the last real token is never seen by a real row (causal attention), so no padding mask is
needed and the real rows are those of the unbatched pass. On CPU batching measured slower
(padding and cache copies, and no better use of the matrix units), so the retrieval default
batches only on CUDA.

What it cannot save: everything after a sequence's first private token (for a needle sample,
from its needle to its end) is computed for that sequence alone, and those are the late,
expensive positions (each attends to all earlier keys). The saving is largest where sequences
share long prefixes and the private suffixes are short (deep needles, many needles per depth).

Only models whose `LoadedModel.reuses_prefixes` is true (the HF backend) take a prefix cache.
Every layer's q and k reach the walk through `interp.hooks.stream.streaming`, which checks after
each pass that every layer fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError
from interp.hooks.edits import intervene
from interp.hooks.stream import Streamed, streaming
from interp.protocols import Model

__all__ = ["PrefixNode", "prefix_tree", "tree_cost", "SequenceRows", "RowStats", "tree_rows"]


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
    children: tuple[PrefixNode, ...] = ()

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)

    def walk(self) -> Iterator[PrefixNode]:
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


# --------------------------------------------------------------------------------------------
# the walk (a reused KV cache)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SequenceRows:
    """What `tree_rows` computed for one sequence.

    Attributes:
        positions: [n_rows] the requested positions, ascending.
        greedy: [n_rows] argmax of the logits at each position (the token it predicts next).
        stats: per layer, the callback's output for these rows (concatenated along the last
            axis), or None when no callback was given.
    """

    positions: Int[Tensor, " n_rows"]
    greedy: Int[Tensor, " n_rows"]
    stats: Optional[dict[int, Tensor]]


RowStats = Callable[[int, Tensor, Tensor, Tensor], Tensor]


class _Walk:
    """State of one depth-first walk: the cache, what each forward pass must record, results."""

    def __init__(
        self,
        lm: Model,
        rows: list[np.ndarray],
        stats: Optional[RowStats],
        batch_size: int,
        chunk_size: int,
        on_done,
        at_end,
    ):
        self.lm, self.rows, self.stats, self.on_done, self.at_end = lm, rows, stats, on_done, at_end
        self.batch_size, self.chunk_size = (1 if at_end is not None else batch_size), chunk_size
        self.left = [int(r.size) for r in rows]  # rows still to compute per sequence
        self.parts: list[list[tuple[Tensor, Tensor, dict[int, Tensor]]]] = [[] for _ in rows]
        self.plan: list[
            tuple[int, int, list[tuple[int, Tensor]]]
        ] = []  # per batch row: (past, length, [(member, local rows)])
        self.layer_out: dict[tuple[int, int], dict[int, Tensor]] = {}
        self.streamed: Optional[Streamed] = None  # set by tree_rows: the fired counts of the walk's passes
        self.results: dict[int, SequenceRows] = {}

    # called by the stream for every layer of every forward pass
    def on_layer(self, layer: int, q: Tensor, k: Tensor) -> None:
        if self.stats is None:
            return
        for b, (past, length, wanted) in enumerate(self.plan):
            for member, local in wanted:
                q_b = q[b : b + 1, :, :length]
                k_b = k[b : b + 1, :, : past + length]
                self.layer_out.setdefault((b, member), {})[layer] = self.stats(
                    layer, q_b, k_b, local.to(q.device)
                ).cpu()

    def run(self, nodes: Sequence[PrefixNode], cache: Any) -> None:
        """Compute sibling edges (one batch row each) on ``cache``, at most ``chunk_size`` positions a cached pass.

        A pass on top of a cache needs an explicit [query_pos, key_pos] mask (torch's own
        causal flag aligns queries to the first key), so a long edge below a cached prefix is
        cut into chunks, each a cached pass on top of the previous ones: the mask and the
        activations of one pass stay O(chunk x key_pos), and peak memory grows linearly with
        the length (the cache itself is O(key_pos)). A batch row whose edge has ended is all
        padding in the later chunks. An edge at position 0 has no cache and no mask (SDPA's
        causal path, O(pos) memory, and about 10% faster than chunks at 8k tokens): one pass.
        """
        width, step = max(len(n.tokens) for n in nodes), self.chunk_size
        if width <= step or nodes[0].start == 0:
            self.forward(nodes, cache)
            return
        for i in range(0, width, step):
            self.forward([PrefixNode(n.start + i, n.tokens[i : i + step], n.members, ()) for n in nodes], cache)

    def forward(self, nodes: Sequence[PrefixNode], cache: Any) -> None:
        """One pass over the edges ``nodes`` (siblings, right-padded into one batch) on ``cache``."""
        past = nodes[0].start
        width = max(len(n.tokens) for n in nodes)
        pad = 0
        ids = torch.full((len(nodes), width), pad, dtype=torch.long)
        self.plan, keep = [], set()
        for b, node in enumerate(nodes):
            ids[b, : len(node.tokens)] = torch.tensor(node.tokens, dtype=torch.long)
            wanted = []
            for member in node.members:
                r = self.rows[member]
                local = r[(r >= node.start) & (r < node.end)] - node.start
                if local.size:
                    wanted.append((member, torch.from_numpy(local)))
                    keep.update(int(x) for x in local)
            self.plan.append((past, len(node.tokens), wanted))
        order = sorted(keep)
        self.layer_out = {}
        logits = self.lm.logits_at(ids.to(self.lm.device), order or [width - 1], past=cache)
        self.streamed.check()  # every layer fired in this pass too (fails at the first bad pass, not the walk's end)
        greedy = logits.argmax(-1).cpu() if order else None  # [batch, len(order)]
        where = {p: i for i, p in enumerate(order)}
        for b, (_, _, wanted) in enumerate(self.plan):
            for member, local in wanted:
                picked = greedy[b, [where[int(x)] for x in local]]
                self.parts[member].append((local + nodes[b].start, picked, self.layer_out.get((b, member), {})))
                self.left[member] -= int(local.numel())
                if self.left[member] == 0:
                    self._finish(member)
        del logits

    def _finish(self, member: int) -> None:
        parts = self.parts[member]
        stats = None
        if self.stats is not None:
            stats = {layer: torch.cat([p[2][layer] for p in parts], dim=-1) for layer in range(self.lm.arch.n_layers)}
        result = SequenceRows(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), stats)
        self.parts[member] = []
        self.results[member] = result
        if self.on_done is not None:
            self.on_done(member, result)

    def ends(self, node: PrefixNode, cache: Any) -> None:
        """``at_end`` for the sequences ending at ``node`` (cache = exactly their positions), then undo its growth."""
        if self.at_end is None:
            return
        for member in node.ends:
            self.plan = []  # passes the callback runs record nothing here
            self.at_end(member, cache)
            self.lm.crop_cache(cache, node.end)

    def children(self, node: PrefixNode, cache: Any) -> None:
        """Compute every edge below ``node``; ``cache`` holds positions < node.end before and after."""
        leaves = [c for c in node.children if not c.children]
        for child in node.children:
            if child.children:
                self.run([child], cache)
                self.ends(child, cache)
                self.children(child, cache)
                self.lm.crop_cache(cache, node.end)
        for i in range(0, len(leaves), self.batch_size):
            group = leaves[i : i + self.batch_size]
            if len(group) == 1:
                self.run(group, cache)
                self.ends(group[0], cache)
                self.lm.crop_cache(cache, node.end)
            else:
                self.run(group, self.lm.repeat_cache(cache, len(group), node.end))


def tree_rows(
    lm: Model,
    sequences: Sequence[Sequence[int]],
    rows: Optional[Sequence[Sequence[int]]],
    *,
    stats: Optional[RowStats] = None,
    edits: Sequence = (),
    batch_size: int = 1,
    chunk_size: int = 2048,
    on_done: Optional[Callable[[int, SequenceRows], None]] = None,
    at_end: Optional[Callable[[int, Any], None]] = None,
) -> list[SequenceRows]:
    """Greedy tokens (and row statistics) at chosen positions of many sequences, shared prefixes once.

    Args:
        lm: a model that takes a prefix cache (`Model.reuses_prefixes`: the HF backend).
        sequences: token ids of each sequence.
        rows: per sequence, the positions (into the sequence) whose outputs are wanted; at
            least one each. None: no rows (for ``at_end`` only).
        stats: optional ``stats(layer, q, k, rows) -> Tensor[..., n_rows]`` called per layer
            and edge with q [1, head, n, d_head] of the edge's positions, k [1, kv_head,
            key_pos, d_head] of every position up to the edge's end, and ``rows`` indices into
            q's positions; its outputs are concatenated per sequence along the last axis.
        edits: `interp.hooks` edits applied to every pass (the cached prefix included).
        batch_size: at most this many sibling leaves per forward pass (1 = no batching).
        chunk_size: at most this many positions per pass on top of a cached prefix (bounds
            the mask and activation memory of one pass; any cut is exact, like the tree's own).
        on_done: ``on_done(index, result)`` called as soon as a sequence's rows are complete
            (to log finished samples while the walk goes on).
        at_end: ``at_end(index, cache)`` called when the cache (batch 1) holds exactly
            sequence ``index``; it may run more cached passes (e.g. greedy decode steps, under
            the same edits), whose growth of the cache is cropped off afterwards. Implies
            ``batch_size=1``.

    Returns:
        One `SequenceRows` per sequence, in input order (empty ones when ``rows`` is None).

    Raises:
        InterpError: a model without prefix caches, rows outside a sequence, or a sequence with no rows.
    """
    if not lm.reuses_prefixes:
        raise InterpError(
            "shared-prefix reuse needs a model that takes a KV cache (the HF backend); load the model with backend='hf'"
        )
    if rows is not None and len(rows) != len(sequences):
        raise InterpError(
            f"rows has {len(rows)} entries for {len(sequences)} sequences: give one list of positions per sequence"
        )
    if rows is None and at_end is None:
        raise InterpError("nothing to compute: give rows, at_end, or both")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InterpError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise InterpError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    wanted = []
    for i, seq in enumerate(sequences):
        lm.check_length(len(seq))
        if rows is None:
            wanted.append(np.zeros(0, dtype=np.int64))
            continue
        r = np.unique(np.asarray(list(rows[i]), dtype=np.int64))
        if r.size == 0 or r[0] < 0 or r[-1] >= len(seq):
            raise InterpError(f"sequence {i}: rows must be 1+ positions in [0, {len(seq)}), got {r.tolist()[:8]}")
        wanted.append(r)
    tree = prefix_tree(sequences)
    walk = _Walk(lm, wanted, stats, batch_size, chunk_size, on_done, at_end)
    with intervene(lm, list(edits)), streaming(lm, None, walk.on_layer) as walk.streamed:
        cache = lm.new_cache()
        if tree.tokens:
            walk.run([tree], cache)
            walk.ends(tree, cache)
        walk.children(tree, cache)
        del cache
    if rows is None:
        empty = torch.zeros(0, dtype=torch.long)
        return [SequenceRows(empty, empty, None) for _ in sequences]
    missing = [i for i in range(len(sequences)) if i not in walk.results]
    if missing:  # cannot happen for a well-formed tree; never return partial results
        raise InterpError(f"internal error: rows of sequences {missing[:5]} were not computed")
    return [walk.results[i] for i in range(len(sequences))]

"""`interp.analyses.rank_heads`: the one ranking of heads (order, ties, NaN, |score|, layer numbers),
and the analyses' ``top`` helpers that now go through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses import rank_heads
from interp.errors import InterpError


def test_order_ties_and_nan():
    scores = np.array([[0.2, 0.9, np.nan], [0.2, -1.0, 0.5]])
    # best first; the 0.2 tie keeps (layer, head) order; the unmeasured (NaN) head is never ranked
    assert rank_heads(scores) == [(0, 1, 0.9), (1, 2, 0.5), (0, 0, 0.2), (1, 0, 0.2), (1, 1, -1.0)]
    assert rank_heads(scores, 2) == [(0, 1, 0.9), (1, 2, 0.5)]
    assert rank_heads(scores, by="abs")[:2] == [(1, 1, -1.0), (0, 1, 0.9)]  # signed score kept
    assert rank_heads(np.full((2, 2), np.nan)) == []


def test_torch_input_and_layer_numbers():
    mass = torch.tensor([[0.0, 0.3, 0.1], [0.5, 0.0, 0.3]], dtype=torch.float64)
    got = rank_heads(mass, layers=[7, 9])
    assert got[:3] == [(9, 0, 0.5), (7, 1, 0.3), (9, 2, 0.3)] and got[3] == (7, 2, pytest.approx(0.1))
    assert all(isinstance(x, int) for layer, head, _ in got for x in (layer, head))


def test_bad_arguments():
    with pytest.raises(InterpError, match="'value' or 'abs'"):
        rank_heads(np.zeros((2, 2)), by="signed")
    with pytest.raises(InterpError, match="at least one head"):
        rank_heads(np.zeros((2, 2)), 0)
    with pytest.raises(InterpError, match="one per row"):
        rank_heads(np.zeros((2, 2)), layers=[3])


def test_analyses_rank_through_it():
    from interp.analyses.heads import HeadConfig, HeadResult

    grid = np.array([[[[0.1, np.nan], [0.7, 0.7]]]])  # [source, kind, layer, head]
    result = HeadResult(
        config=HeadConfig(),
        model="m",
        layers=(4, 6),
        n_heads=2,
        sources=("text",),
        kinds=("induction",),
        scores=grid,
        n_rows=np.ones((1, 1)),
    )
    # regression guard of the old policy's difference: NaN was ranked last as -inf, now left out
    assert result.top("induction", 5) == [(6, 0, 0.7), (6, 1, 0.7), (4, 0, 0.1)]


def test_grid_cells_list_a_grid_in_row_major_order():
    """The rows of every heads table: (layer, head) pairs in the order ``grid.ravel()`` reads them."""
    from interp.analyses.ranking import grid_cells

    li, hi = grid_cells(2, 3)
    assert li.tolist() == [0, 0, 0, 1, 1, 1] and hi.tolist() == [0, 1, 2, 0, 1, 2]
    grid = np.random.default_rng(0).random((2, 3, 4))
    cells = grid_cells(*grid.shape)
    assert np.array_equal(grid[cells], grid.ravel())

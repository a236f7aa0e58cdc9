"""Ranking heads by a score: the one definition every analysis uses.

A head score grid is ``[layer, head]`` (retrieval score, detector score, QR score, patching
effect, hidden-sink mass, ...). `rank_heads` orders its heads best first with one policy
everywhere: a NaN score means the head was not measured (no sample counted it, it was not
patched) and is never ranked; ties keep (layer, head) order, so a ranking is reproducible.
`grid_cells` lists the cells of such a grid (or of any n-D grid) in that order, for the tables.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError

__all__ = ["rank_heads", "grid_cells"]

RankedHead = tuple[int, int, float]  # (layer, head, score)


def grid_cells(*sizes: int) -> tuple[np.ndarray, ...]:
    """The index of every cell of a grid of shape ``sizes`` along each axis, in row-major order:
    ``grid_cells(n_layers, n_heads)`` -> (layer index, head) [n_layers * n_heads] each, the rows of
    a heads table (``grid[cells]`` reads the grid in the same order)."""
    return tuple(np.indices(sizes).reshape(len(sizes), -1))


def rank_heads(
    scores: Union[Float[np.ndarray, "layer head"], Float[Tensor, "layer head"]],
    k: Optional[int] = None,
    *,
    by: str = "value",
    layers: Optional[Sequence[int]] = None,
) -> list[RankedHead]:
    """Heads of a ``[layer, head]`` score grid, best first, as (layer, head, score).

    Args:
        scores: the grid (numpy or torch; read in float64). NaN = not measured: left out.
        k: at most this many heads (None: every measured head).
        by: "value" (largest score first) or "abs" (largest |score| first, e.g. patching
            effects of either sign); the signed score is returned either way.
        layers: the layer number of each row, for grids over a subset of layers (default: the
            row index).

    Returns:
        [(layer, head, score)], best first; ties in (layer, head) order.

    Raises:
        InterpError: an unknown ``by``, ``k`` < 1, or ``layers`` of the wrong length.
    """
    if by not in ("value", "abs"):
        raise InterpError(f"rank heads by {by!r}: use 'value' or 'abs'")
    if k is not None and k < 1:
        raise InterpError(f"top k = {k}: ask for at least one head")
    grid = (
        scores.detach().double().cpu().numpy() if isinstance(scores, Tensor) else np.asarray(scores, dtype=np.float64)
    )
    n_layers, n_heads = grid.shape
    if layers is not None and len(layers) != n_layers:
        raise InterpError(f"{len(layers)} layer numbers for a grid of {n_layers} layers: give one per row")
    flat = grid.reshape(-1)
    measured = np.flatnonzero(~np.isnan(flat))
    key = np.abs(flat[measured]) if by == "abs" else flat[measured]
    order = measured[np.argsort(-key, kind="stable")][:k]
    names = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    return [(names[int(i) // n_heads], int(i) % n_heads, float(flat[i])) for i in order]

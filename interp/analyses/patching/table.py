"""`PatchTable`: what a patching sweep over token batches returns, labelled like the model.

A sweep (`interp.experiments.patching.activation_patching`, `attribution_patching`,
`path_patching`) runs a list of patches, each ``(layer, head, pos)`` with -1 meaning "all heads" or "all positions". The
table keeps that list beside the metric each patch gave and the metric of the clean and the
corrupted runs, so every patch also has its normalised score (docs/METRICS.md#circuit-patching):
0 when the patch changes nothing, 1 when it restores the clean run.

Read it as a long table (`to_dataframe`: columns ``layer``, ``head``, ``position`` when the
patches are per position, ``score``, ``normalised``), as an array shaped like the model
(`to_grid`: ``[layer, head]``, or ``[layer, head, position]`` when per position), or as the
top patches (`top`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError

__all__ = ["PatchTable", "normalise"]


def normalise(score: np.ndarray | float, clean: float, corrupt: float, *, effect: bool = False) -> np.ndarray:
    """The normalised score of metric values: (score - corrupt) / (clean - corrupt).

    Args:
        score: metric values after patching (or, with ``effect``, estimates of
            metric(patched) - metric(corrupted), as attribution patching gives).
        clean: the metric of the clean run, averaged over prompts.
        corrupt: the metric of the corrupted run, averaged over prompts.
        effect: ``score`` is already a difference from the corrupted run.

    Returns:
        The normalised scores; NaN everywhere when clean and corrupted coincide (the ratio is
        undefined there).
    """
    gap = clean - corrupt
    values = np.asarray(score, dtype=np.float64)
    if abs(gap) < 1e-12:
        return np.full_like(values, np.nan)
    return (values if effect else values - corrupt) / gap


@dataclass(frozen=True, eq=False)
class PatchTable:
    """Every patch of one sweep with its score, labelled by layer, head and position.

    Attributes:
        site: the patched site: z, q, k, v (head sites; k and v count kv heads), resid_pre,
            attn_out or mlp_out; ``path:q``, ``path:k`` or ``path:v`` for path patching (the
            senders' z, along the path into the receivers' q, k or v).
        index: [patch, 3] (layer, head, pos) of each patch, -1 = all heads / all positions.
        values: [patch] the metric after each patch averaged over prompts (activation
            patching), or the first-order estimate of metric(patched) - metric(corrupted)
            (attribution patching, ``effect=True``).
        clean, corrupt: the metric of the unpatched clean and corrupted runs (mean over prompts).
        shape: (layers, heads, positions) of the model and prompts (heads: kv heads for k and v,
            0 for residual sites).
        effect: ``values`` are differences from the corrupted run (attribution patching).
    """

    site: str
    index: Int[Tensor, "patch 3"]
    values: Float[Tensor, " patch"]
    clean: float
    corrupt: float
    shape: tuple[int, int, int]
    effect: bool = False

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def by_head(self) -> bool:
        """True when the patches name single heads (the table has a head axis)."""
        return bool((self.index[:, 1] >= 0).any())

    @property
    def by_pos(self) -> bool:
        """True when the patches name single positions (the table has a position axis)."""
        return bool((self.index[:, 2] >= 0).any())

    @property
    def normalised(self) -> np.ndarray:
        """[patch] (score - corrupt) / (clean - corrupt): 0 does nothing, 1 restores the clean run."""
        return normalise(self.values.double().cpu().numpy(), self.clean, self.corrupt, effect=self.effect)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per patch: ``layer``, ``head`` (<NA>: all heads, or a residual site),
        ``position`` (only when the patches are per position; <NA>: all positions), ``score``,
        ``normalised``."""
        idx = self.index.cpu().numpy()
        df = pd.DataFrame(
            {"layer": idx[:, 0], "head": pd.array([h if h >= 0 else None for h in idx[:, 1]], dtype="Int64")}
        )
        if self.by_pos:
            df["position"] = pd.array([p if p >= 0 else None for p in idx[:, 2]], dtype="Int64")
        df["score"] = self.values.double().cpu().numpy()
        df["normalised"] = self.normalised
        return df

    def to_grid(self, normalised: bool = False) -> np.ndarray:
        """The scores shaped like the model, NaN where nothing was patched.

        Args:
            normalised: the normalised scores instead of the metric.

        Returns:
            float64 array [layer, head] (patches of whole heads), [layer, head, position] (heads
            at single positions), [layer] or [layer, position] (residual sites, or every head at
            once).

        Raises:
            InterpError: the patches mix "all positions" with single positions (or "all heads"
                with single heads): no one grid holds both; use `to_dataframe`.
        """
        idx = self.index.cpu().numpy()
        axes = [0]
        for axis, on in ((1, self.by_head), (2, self.by_pos)):
            if on and bool((idx[:, axis] < 0).any()):
                what = "heads" if axis == 1 else "positions"
                raise InterpError(
                    f"the patches mix all {what} with single {what}: no one grid holds both; use to_dataframe()"
                )
            if on:
                axes.append(axis)
        grid = np.full(tuple(self.shape[a] for a in axes), np.nan)
        grid[tuple(idx[:, a] for a in axes)] = self.normalised if normalised else self.values.double().cpu().numpy()
        return grid

    def top(self, k: int = 10, *, by: str = "normalised") -> pd.DataFrame:
        """The ``k`` patches of largest |``by``| (``"normalised"`` or ``"score"``), largest first."""
        if by not in ("normalised", "score"):
            raise InterpError(f"top(by={by!r}): use 'normalised' or 'score'")
        if k < 0:
            raise InterpError(f"top k must be >= 0, got {k}")
        df = self.to_dataframe()
        order = df[by].abs().sort_values(ascending=False, na_position="last").index
        return df.loc[order].head(k).reset_index(drop=True)

"""Figures of circuit patching: layer x head and layer x position heatmaps, circuit overlap.

Every function takes a `PatchResult` (or a `CircuitOverlap`) and returns a plotly Figure.
Scores are drawn on a diverging scale centred on 0 (red restores the clean answer, blue pushes
the other way), so negative heads stand out as much as positive ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from interp.analyses.patching import CircuitOverlap, PatchResult
from interp.plots.common import head_grid

__all__ = ["patch_figure", "position_heatmap", "overlap_figure", "figures_html"]

_SCALE = "RdBu_r"


def _reduce_abs(values: np.ndarray, axis: int) -> np.ndarray:
    """The entry of largest |value| along ``axis`` (NaN where all are NaN), keeping its sign."""
    filled = np.where(np.isfinite(values), values, 0.0)
    pick = np.abs(filled).argmax(axis=axis)
    out = np.take_along_axis(values, np.expand_dims(pick, axis), axis=axis).squeeze(axis)
    out[~np.isfinite(values).any(axis=axis)] = np.nan
    return out


def _limit(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0


def _label(result: PatchResult) -> str:
    return "score" if result.metric == "score" else result.metric


def _title(result: PatchResult, what: str) -> str:
    base = result.baseline
    acc = (
        f"; clean accuracy {base.clean_accuracy:.0%}, LD clean {base.clean_logit_diff:.2f} / corrupt {base.corrupt_logit_diff:.2f}"
        if base
        else ""
    )
    corr = (
        f"; r(attribution, activation) = {result.correlation:.2f}"
        if result.correlation is not None and np.isfinite(result.correlation)
        else ""
    )
    return f"{result.task}: {result.method} patching of {result.target} {what}{acc}{corr}"


def _pos_grid(values: np.ndarray, labels: Sequence[str], *, title: str, colorbar: str, zmax: float) -> go.Figure:
    """Heatmap of a [layer, pos] array with the position labels on the x axis."""
    n_layers, n_pos = values.shape
    ticks = [f"{p}: {labels[p]}" if labels else str(p) for p in range(n_pos)]
    text = [
        [f"layer {layer}, {ticks[p]}<br>{colorbar}: {values[layer, p]:.4g}" for p in range(n_pos)]
        for layer in range(n_layers)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=ticks,
            y=list(range(n_layers)),
            text=text,
            hovertemplate="%{text}<extra></extra>",
            colorscale=_SCALE,
            zmin=-zmax,
            zmax=zmax,
            colorbar={"title": {"text": colorbar}},
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="position",
        yaxis_title="layer",
        yaxis={"autorange": "reversed", "dtick": max(1, n_layers // 15)},
        height=max(350, 18 * n_layers + 160),
    )
    return fig


def patch_figure(result: PatchResult) -> go.Figure:
    """The main heatmap of a patching result.

    - head targets over all positions: layer x head;
    - head targets by position: layer x head, each cell the position with the largest |score|
      (the layer x position view is `position_heatmap`);
    - residual targets by position: layer x position; over all positions: one cell per layer.

    Args:
        result: a `PatchResult`.
    """
    s = np.asarray(result.scores, dtype=float)
    label = _label(result)
    zmax = _limit(s)
    if "head" in result.axes:
        grid = _reduce_abs(s, 2) if "pos" in result.axes else s
        what = "(layer x head" + (", strongest position)" if "pos" in result.axes else ")")
        fig = head_grid(grid, title=_title(result, what), colorbar=label, zmin=-zmax, zmax=zmax, colorscale=_SCALE)
        if result.head_axis == "kv_head":
            fig.update_layout(xaxis_title="kv head")
        return fig
    if "pos" in result.axes:
        return _pos_grid(s, result.pos_labels, title=_title(result, "(layer x position)"), colorbar=label, zmax=zmax)
    return _pos_grid(
        s[:, None], ["all positions"], title=_title(result, "(per layer, all positions)"), colorbar=label, zmax=zmax
    )


def position_heatmap(result: PatchResult) -> go.Figure:
    """Layer x position heatmap; for head targets by position, the head with the largest |score|.

    Raises:
        InterpError: the result has no position axis.
    """
    from interp.errors import InterpError

    if "pos" not in result.axes:
        raise InterpError(f"the {result.target} result has no position axis: patch with by_pos=True (--by-pos)")
    s = np.asarray(result.scores, dtype=float)
    grid = _reduce_abs(s, 1) if "head" in result.axes else s
    what = "(layer x position" + (", strongest head)" if "head" in result.axes else ")")
    return _pos_grid(grid, result.pos_labels, title=_title(result, what), colorbar=_label(result), zmax=_limit(s))


def overlap_figure(overlap: CircuitOverlap, scores_a: np.ndarray, scores_b: np.ndarray) -> go.Figure:
    """Layer x head map of two circuits: 1 = only in A, 2 = only in B, 3 = in both.

    Args:
        overlap: a `CircuitOverlap`.
        scores_a: circuit A's [layer, head] score grid (for hover text).
        scores_b: circuit B's [layer, head] score grid.
    """
    shape = scores_a.shape
    code = np.zeros(shape)
    for layer, head in overlap.heads_a:
        code[layer, head] += 1
    for layer, head in overlap.heads_b:
        code[layer, head] += 2
    names = {0: "", 1: f"{overlap.task_a} only", 2: f"{overlap.task_b} only", 3: "both"}
    hover = [
        [
            f"{names[int(code[i, j])]}<br>{overlap.task_a}: {scores_a[i, j]:.3g}, {overlap.task_b}: {scores_b[i, j]:.3g}"
            for j in range(shape[1])
        ]
        for i in range(shape[0])
    ]
    fig = head_grid(
        np.where(code > 0, code, np.nan),
        title=(
            f"top-{overlap.top} circuits: {len(overlap.shared)} shared heads "
            f"({overlap.share:.0%} of the circuit, Jaccard {overlap.jaccard:.2f})"
        ),
        colorbar="1 A, 2 B, 3 both",
        hover=hover,
        zmin=1.0,
        zmax=3.0,
        colorscale="Portland",
    )
    return fig


def figures_html(figures: Sequence[go.Figure], title: str = "interp") -> str:
    """One self-contained HTML page holding several figures (`interp.plots.export.page_html`,
    plotly.js embedded once)."""
    from interp.plots.export import PageSection, page_html

    section = PageSection(
        "Figures", figures=[(f"figure-{i + 1}", fig) for i, fig in enumerate(figures)], anchor="figures"
    )
    return page_html([section], title=title)

"""Shared figure builders: layer x head grids and token traces.

Analyses' figure functions build on these so every grid and trace looks and hovers the same.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["head_grid", "token_trace", "position_grid"]


def head_grid(
    values,
    *,
    title: str,
    colorbar: str = "score",
    hover: Optional[Sequence[Sequence[str]]] = None,
    zmin: Optional[float] = None,
    zmax: Optional[float] = None,
    colorscale: str = "Viridis",
) -> go.Figure:
    """Heatmap of a [layer, head] array with 'layer L head H: value' hover.

    Args:
        values (ArrayLike): [n_layers, n_heads] (NaN cells are left blank).
        hover: optional extra hover text per cell, same shape.
    """
    z = np.asarray(values, dtype=float)
    n_layers, n_heads = z.shape
    text = [
        [
            f"layer {layer} head {head}<br>{colorbar}: {z[layer, head]:.4g}"
            + (f"<br>{hover[layer][head]}" if hover is not None else "")
            for head in range(n_heads)
        ]
        for layer in range(n_layers)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            text=text,
            hovertemplate="%{text}<extra></extra>",
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            colorbar={"title": {"text": colorbar}},
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="head",
        yaxis_title="layer",
        yaxis={"autorange": "reversed", "dtick": max(1, n_layers // 15)},
        xaxis={"dtick": 1 if n_heads <= 32 else max(1, n_heads // 16)},
        height=max(350, 18 * n_layers + 120),
    )
    return fig


def token_trace(
    tokens: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    marks: Optional[dict[str, Sequence[int]]] = None,
    positions: Optional[Sequence[int]] = None,
) -> go.Figure:
    """Line traces over token positions, with the token text in the hover.

    Args:
        tokens: display string per position.
        series: name -> values per position.
        marks: name -> positions to highlight with markers on the first series.
        positions: x values (default 0..len-1).
    """
    x = list(positions) if positions is not None else list(range(len(tokens)))
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(
            go.Scatter(
                x=x,
                y=list(ys),
                mode="lines",
                name=name,
                text=[repr(t) for t in tokens],
                hovertemplate="pos %{x} token %{text}<br>" + name + ": %{y:.4g}<extra></extra>",
            )
        )
    if marks and series:
        first = list(series.values())[0]
        index = {p: i for i, p in enumerate(x)}
        for name, where in marks.items():
            pts = [p for p in where if p in index]
            fig.add_trace(
                go.Scatter(
                    x=pts,
                    y=[first[index[p]] for p in pts],
                    mode="markers",
                    name=name,
                    text=[repr(tokens[index[p]]) for p in pts],
                    hovertemplate="pos %{x} token %{text}<br>" + name + "<extra></extra>",
                )
            )
    fig.update_layout(title=title, xaxis_title="position", hovermode="closest")
    return fig


def position_grid(
    values,
    *,
    rows: Sequence[str],
    tokens: Sequence[str],
    title: str,
    colorbar: str = "score",
    row_title: str = "",
    zmid: Optional[float] = None,
    colorscale: str = "RdBu_r",
) -> go.Figure:
    """Heatmap of a [row, pos] array (e.g. patching score per layer and position) with token hover.

    Args:
        values (ArrayLike): [n_rows, n_pos] (NaN cells are left blank).
        rows: label per row (e.g. "layer 3", "L3 H2").
        tokens: display string per position; shown as the x tick labels ("pos 'tok'").
        zmid: centre of a diverging colour scale (e.g. 0 for patching scores); None = auto.
        colorscale: plotly colour scale (default diverging, positive red).
    """
    import html as _html

    z = np.asarray(values, dtype=float)
    if z.shape != (len(rows), len(tokens)):
        from interp.errors import InterpError

        raise InterpError(
            f"values have shape {z.shape} but got {len(rows)} row labels and {len(tokens)} tokens: pass one label per row "
            "and one token per position"
        )
    xs = [f"{i} {_html.escape(repr(t), quote=False)}" for i, t in enumerate(tokens)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=xs,
            y=list(rows),
            zmid=zmid,
            colorscale=colorscale,
            colorbar={"title": {"text": colorbar}},
            hovertemplate="%{y}<br>token %{x}<br>" + colorbar + ": %{z:.4g}<extra></extra>",
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "position", "type": "category", "tickangle": -60, "showticklabels": len(xs) <= 80},
        yaxis={"title": row_title, "type": "category", "autorange": "reversed"},
        height=max(350, 16 * len(rows) + 180),
    )
    return fig

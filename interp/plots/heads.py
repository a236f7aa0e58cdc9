"""Figures of the head experiments (`interp.experiments.heads`, `select_copy`, `qr_heads`, `influence`).

Each function takes a result object and returns a plotly Figure; none takes a model.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.analyses.heads import HeadResult
from interp.analyses.influence import InfluenceResult
from interp.analyses.qr_heads import QRResult
from interp.analyses.select_copy import SelectCopyResult

__all__ = ["detector_figure", "select_copy_figure", "qr_heads_figure", "influence_figure"]


def _grid_trace(z: np.ndarray, layers: tuple[int, ...], name: str, coloraxis: str) -> go.Heatmap:
    text = [[f"layer {l} head {h}<br>{name}: {z[i, h]:.3f}" for h in range(z.shape[1])] for i, l in enumerate(layers)]
    return go.Heatmap(
        z=z, x=list(range(z.shape[1])), y=list(layers), text=text, hovertemplate="%{text}<extra></extra>",
        coloraxis=coloraxis,
    )  # fmt: skip


def detector_figure(result: HeadResult, source: Optional[str] = None) -> go.Figure:
    """One layer x head heatmap per detector (previous, duplicate, induction), shared 0-1 colour scale.

    Args:
        result: `interp.analyses.heads.HeadResult` (from `interp.experiments.heads`).
        source: "random" or "text" (default: the result's first source).
    """
    source = source or result.sources[0]
    kinds = result.kinds
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"{k} ({source})" for k in kinds], shared_yaxes=True)
    for c, kind in enumerate(kinds, 1):
        fig.add_trace(_grid_trace(result.grid(kind, source), result.layers, f"{kind} score", "coloraxis"), row=1, col=c)
        fig.update_xaxes(title_text="head", row=1, col=c)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)
    fig.update_layout(
        title=f"Head detectors on {result.model}: mean attention mass on the expected key",
        coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": {"text": "mass"}}},
        height=max(380, 16 * len(result.layers) + 140),
    )
    return fig


def select_copy_figure(result: SelectCopyResult) -> go.Figure:
    """Accuracy of every head's argmax over options, by QK-score and by attention score.

    Args:
        result: `interp.analyses.select_copy.SelectCopyResult`.
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["QK-score accuracy", "attention-score accuracy"], shared_yaxes=True
    )
    for c, grid in enumerate((result.qk_accuracy, result.attn_accuracy), 1):
        fig.add_trace(_grid_trace(grid, result.layers, "accuracy", "coloraxis"), row=1, col=c)
        fig.update_xaxes(title_text="head", row=1, col=c)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)
    fig.update_layout(
        title=(
            f"Select-and-copy heads on {result.model} ({result.n_questions} questions, chance "
            f"{1 / result.n_options:.2f}, model {result.model_accuracy:.2f})"
        ),
        coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": {"text": "accuracy"}}},
        height=max(380, 16 * len(result.layers) + 140),
    )
    return fig


def qr_heads_figure(result: QRResult) -> go.Figure:
    """QRHead score (query-to-gold-document mass, null query subtracted) of every head.

    Args:
        result: `interp.analyses.qr_heads.QRResult`.
    """
    z = result.scores
    fig = go.Figure(_grid_trace(z, result.layers, "QR score", "coloraxis"))
    lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig.update_layout(
        title=f"Query-focused retrieval heads on {result.model} ({result.n_samples} samples)",
        xaxis_title="head", yaxis={"title": "layer", "autorange": "reversed"},
        coloraxis={"colorscale": "RdBu", "cmid": 0.0, "cmin": -lim, "cmax": lim, "colorbar": {"title": {"text": "score"}}},
        height=max(380, 16 * len(result.layers) + 140),
    )  # fmt: skip
    return fig


def influence_figure(result: InfluenceResult) -> go.Figure:
    """AttentionInfluence of each text (sorted), with base and masked loss on hover.

    Args:
        result: `interp.analyses.influence.InfluenceResult`.
    """
    order = np.argsort(-result.influence)
    labels = [result.labels[i] for i in order]
    fig = go.Figure(
        go.Bar(
            x=list(range(len(order))), y=result.influence[order],
            text=[f"{lab}<br>base loss {result.base_loss[i]:.3f}<br>masked {result.masked_loss[i]:.3f}" for lab, i in zip(labels, order)],
            hovertemplate="%{text}<br>AI %{y:.4f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=f"AttentionInfluence on {result.model}: {len(result.heads)} heads made uniform",
        xaxis_title="text (ranked)", yaxis_title="(L_masked - L_base) / L_base", height=420,
    )  # fmt: skip
    return fig

"""Figures of retrieval-head scoring, drawn from a `RetrievalResult` (never from a model).

`figure` is the page of `interp score retrieval` (retrieval_heads.html): a layer x head heatmap
of retrieval scores (Wu et al. 2024) whose hover gives each head's score, rank and whether it
crosses the threshold; the title carries the share of retrieval heads and, when the causal
check ran, the recall with the top-K and random-K heads masked. `masking_figure` shows that
check as bars (random-K: mean over seeds with the spread).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from interp.analyses.retrieval import RetrievalResult
from interp.plots.common import head_grid

__all__ = ["figure", "masking_figure"]


def figure(result: RetrievalResult) -> go.Figure:
    """Layer x head heatmap of retrieval scores with score, rank and threshold in the hover."""
    scores = np.asarray(result.scores, dtype=float)
    heads = result.to_dataframe()
    n_layers, n_heads = scores.shape
    rank = heads["rank"].to_numpy().reshape(n_layers, n_heads)
    threshold = result.config.threshold
    hover = [
        [
            f"rank {rank[layer, head] if rank[layer, head] > 0 else '-'} of {n_layers * n_heads}"
            + f"<br>{'retrieval head' if scores[layer, head] > threshold else 'not a retrieval head'} (> {threshold})"
            + f"<br>counted samples: {result.n_samples}"
            for head in range(n_heads)
        ]
        for layer in range(n_layers)
    ]
    title = f"Retrieval scores of {result.model} ({result.n_samples}/{len(result.samples)} samples counted)"
    if result.n_samples:
        title += f": {result.share:.1%} of heads > {threshold}"
    if result.masking is not None:
        m = result.masking
        title += (
            f"<br><sup>needle recall: unmasked {m.recall_unmasked:.2f}, top-{m.k_top} masked {m.recall_top:.2f}, "
            f"random-{m.k_random} masked {m.recall_random_mean:.2f} ± {m.recall_random_std:.2f} ({len(m.seeds)} seeds)</sup>"
        )
    return head_grid(scores, title=title, colorbar="retrieval score", hover=hover, zmin=0.0)


def masking_figure(result: RetrievalResult) -> go.Figure:
    """Bars of needle recall: unmasked, top-K masked, random-K masked (mean ± std over seeds)."""
    m = result.masking
    if m is None:
        from interp.errors import InterpError

        raise InterpError("this result has no masking check: run the retrieval experiment with mask=True")
    names = ["unmasked", f"top-{m.k_top} masked", f"random-{m.k_random} masked"]
    values = [m.recall_unmasked, m.recall_top, m.recall_random_mean]
    errors = [0.0, 0.0, m.recall_random_std]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            error_y={"type": "data", "array": errors, "visible": True},
            hovertemplate="%{x}: recall %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Causal check: needle recall with heads made uniform ({len(m.seeds)} random seeds)",
        yaxis_title="ROUGE-1 recall",
        yaxis_range=[0, 1.05],
    )
    return fig

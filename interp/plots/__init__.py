"""Plots: plotly figures drawn from result objects (never from a model), and their export.

- `common`: layer x head grids, [row, position] grids and token traces shared by every analysis.
- `attention`: one head's attention pattern with token hover (exact up to 1024 tokens, block-pooled
  above), computed from captured q/k in row chunks.
- `export`: `save_figure` writes a self-contained HTML file (plotly's JavaScript inside, so it
  opens with no network); `save_images` writes PNG, SVG or PDF beside it (plotly's static export,
  kaleido over a headless Chromium); `save_page` writes many figures into one offline page.
- `retrieval`, `sinks`, `patching`, `preplan`: each analysis's figures (import the submodule).
"""

from interp.plots.attention import (
    HeadPattern,
    attention_view,
    head_pattern,
    norm_view,
    pattern_figure,
    pattern_kwargs,
)
from interp.plots.common import head_grid, position_grid, token_trace
from interp.plots.export import (
    IMAGE_FORMATS,
    PageSection,
    figure_div,
    image_backend_available,
    is_static,
    save_figure,
    save_images,
    save_page,
    save_plotlyjs,
    save_png,
    save_pngs,
)

__all__ = [
    "IMAGE_FORMATS",
    "save_figure",
    "save_images",
    "save_png",
    "save_pngs",
    "save_plotlyjs",
    "save_page",
    "figure_div",
    "is_static",
    "image_backend_available",
    "PageSection",
    "head_grid",
    "position_grid",
    "token_trace",
    "HeadPattern",
    "head_pattern",
    "pattern_figure",
    "attention_view",
    "norm_view",
    "pattern_kwargs",
]

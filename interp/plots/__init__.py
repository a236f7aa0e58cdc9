"""Plots: plotly figures drawn from result objects (never from a model), and their export.

Each analysis module has its figure functions here; `export.save_figure` writes a self-contained
HTML file (plotly's JavaScript inside, so it opens with no network).
"""

from interp.plots.export import save_figure

__all__ = ["save_figure"]

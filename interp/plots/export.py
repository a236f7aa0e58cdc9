"""Export of figures: self-contained HTML (works offline), PNG where an image backend exists."""

from __future__ import annotations

import os
from pathlib import Path

from interp.runs import atomic_write_text

__all__ = ["save_figure"]


def save_figure(fig, path: str | os.PathLike, *, png: bool = False) -> Path:
    """Write ``fig`` to ``path`` as one HTML file with plotly.js embedded (no network needed).

    With ``png=True`` also write ``path.with_suffix('.png')`` if kaleido is installed (skipped
    silently otherwise: the HTML is the primary output).
    """
    path = Path(path)
    html = fig.to_html(full_html=True, include_plotlyjs=True, config={"displaylogo": False, "responsive": True})
    atomic_write_text(path, html)
    if png:
        try:
            fig.write_image(str(path.with_suffix(".png")))
        except Exception:  # no image backend: the HTML is the deliverable
            pass
    return path

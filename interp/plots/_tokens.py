"""Token labels for attention heatmaps: hover labels, thinned tick labels, pooled-span labels.

Every string here is escaped for plotly's pseudo-HTML (tokens such as ``<bos>`` would otherwise
vanish from the figure).
"""

from __future__ import annotations

import html
from typing import Sequence

__all__ = ["MAX_TICKS", "token_label", "tick_text", "token_ticks", "span_label"]


def token_label(pos: int, token: str) -> str:
    """'12 'the'' style label, safe to show in plotly's pseudo-HTML hover and tick text."""
    return f"{pos} {html.escape(repr(token), quote=False)}"


MAX_TICKS = 60  # token tick labels per axis; past this every n-th token is labelled


def tick_text(token: str) -> str:
    """A token as a tick label: its text (whitespace-only tokens and newlines shown escaped),
    safe in plotly's pseudo-HTML."""
    shown = token.replace("\n", "\\n") if token.strip() else repr(token)
    return html.escape(shown, quote=False)


def token_ticks(categories: Sequence[str], texts: Sequence[str], limit: int = MAX_TICKS) -> dict:
    """Axis settings that label a categorical heatmap axis with ``texts``, every
    ceil(n / ``limit``)-th one when there are more than ``limit`` (the hover keeps every token)."""
    step = max(1, -(-len(categories) // limit))
    keep = range(0, len(categories), step)
    return {
        "tickmode": "array",
        "tickvals": [categories[i] for i in keep],
        "ticktext": [texts[i] for i in keep],
        "showticklabels": True,
    }


def span_label(start: int, stop: int, tokens: Sequence[str]) -> str:
    """Label of a pooled block of tokens ``[start, stop)``: its first and last token."""
    first = html.escape(repr(tokens[start]), quote=False)
    last = html.escape(repr(tokens[stop - 1]), quote=False)
    return f"{start}-{stop - 1} {first}…{last}" if stop - start > 1 else token_label(start, tokens[start])

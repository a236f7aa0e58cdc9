"""Figures of the preplan-and-anchor analysis: highlighted response text, WAAD and FAI traces,
head spans, and the self-contained ``preplan.html`` page that holds them.

Everything is drawn from `interp.analyses.preplan.PreplanResult` objects (never from a model).
The traces use `interp.plots.common.token_trace`, so their hover shows position and token like
every other trace in interp.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from interp.plots.common import token_trace
from interp.plots.export import PageSection, page_html

__all__ = [
    "waad_figure",
    "fai_figure",
    "span_figure",
    "highlighted_text_html",
    "preplan_page",
]

_PREPLAN = "#f4a261"  # orange
_ANCHOR = "#8ecae6"  # blue
_BOTH = "#c77dff"  # purple: preplan and anchor at once


def waad_figure(result) -> go.Figure:
    """WAAD per response token (mean over local heads) with preplan tokens marked."""
    pos = result.positions
    fig = token_trace(
        result.tokens,
        {"WAAD": result.waad.tolist()},
        title=f"WAAD (W = {result.config.window}) of the {result.n_local} local heads; preplan tokens marked",
        marks={"preplan": pos[result.preplan].tolist()},
        positions=pos.tolist(),
    )
    fig.add_hline(y=result.tau_waad, line_dash="dot", line_color="grey", annotation_text="tau_waad")
    fig.update_layout(yaxis_title="WAAD (tokens)", height=320)
    return fig


def fai_figure(result) -> go.Figure:
    """FAI per response token (mean over global heads) with anchor tokens marked."""
    pos = result.positions
    lo, hi = result.config.band
    fig = token_trace(
        result.tokens,
        {"FAI": result.fai.tolist()},
        title=f"FAI (band {lo}..{hi}) of the {result.n_global} global heads; anchor tokens marked",
        marks={"anchor": pos[result.anchor].tolist()},
        positions=pos.tolist(),
    )
    fig.update_layout(yaxis_title="FAI (attention)", height=320)
    return fig


def span_figure(result) -> go.Figure:
    """Head spans d(l, h) of the chosen layers, sorted, coloured by group."""
    df = result.heads_dataframe().sort_values("span").reset_index(drop=True)
    colors = {"local": _PREPLAN, "global": _ANCHOR, "other": "#bbbbbb"}
    fig = go.Figure()
    for group in ("local", "other", "global"):
        part = df[df.group == group]
        fig.add_trace(
            go.Bar(
                x=part.index.tolist(),
                y=part.span.tolist(),
                name=group,
                marker_color=colors[group],
                text=[f"layer {r.layer} head {r.head}" for r in part.itertuples()],
                hovertemplate="%{text}<br>span %{y:.3g} tokens<extra>" + group + "</extra>",
            )
        )
    fig.update_layout(
        title=f"head span (mean attention distance over the response), layers {list(result.layers)}",
        xaxis_title="heads sorted by span",
        yaxis_title="span (tokens)",
        height=300,
        bargap=0.1,
    )
    return fig


def _token_span(result, r: int) -> str:
    tok = result.tokens[r]
    pp, an = bool(result.preplan[r]), bool(result.anchor[r])
    kind = "both" if pp and an else "preplan" if pp else "anchor" if an else ""
    fai = result.fai[r]
    hover = (
        f"pos {result.positions[r]} token {tok!r}\nWAAD {result.waad[r]:.3f}  jump {result.delta[r]:.3f}\n"
        f"FAI {'n/a' if not np.isfinite(fai) else f'{fai:.4f}'}"
        + ("\npreplan" if pp else "")
        + ("\nanchor" if an else "")
    )
    if result.dominated[r]:
        hover += f"\nlocally dominated anchor, preplan at pos {result.n_prompt + int(result.link[r])}"
    text = html.escape(tok).replace("\n", "\u21b5<br>")
    cls = " ".join(c for c in (kind, "dom" if result.dominated[r] else "") if c)
    return f'<span class="tok {cls}" title="{html.escape(hover, quote=True)}">{text}</span>'


def highlighted_text_html(result) -> str:
    """The response as HTML spans: preplan tokens orange, anchors blue, both purple; dominated
    anchors boxed. Hovering a token shows its position, WAAD, jump and FAI."""
    body = "".join(_token_span(result, r) for r in range(len(result.tokens)))
    return f'<div class="resp">{body}</div>'


_CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5em; max-width: 1100px; }}
.prompt {{ color: #555; white-space: pre-wrap; border-left: 3px solid #ddd; padding-left: .8em; }}
.resp {{ font-family: ui-monospace, monospace; line-height: 1.9; white-space: pre-wrap; border: 1px solid #eee; padding: .8em; }}
.tok {{ border-radius: 3px; }}
.tok:hover {{ outline: 1px solid #333; }}
.preplan {{ background: {_PREPLAN}; }}
.anchor {{ background: {_ANCHOR}; }}
.both {{ background: {_BOTH}; }}
.dom {{ box-shadow: 0 0 0 2px #d00000; }}
.meta {{ color: #333; font-size: .92em; }}
.legend span {{ padding: 0 .4em; margin-right: .6em; border-radius: 3px; }}
"""


def _section(result, sample_id: str, anchor: str) -> PageSection:
    s = result.summary()
    meta = (
        f"{html.escape(result.model)}; layers {s['layers']}; {result.n_local} local and {result.n_global} global heads; "
        f"{s['n_response_tokens']} response tokens ({'greedy' if result.generated else 'given'}); "
        f"{s['n_preplan']} preplan, {s['n_anchor']} anchor, {s['n_dominated_anchors']} locally dominated anchors "
        f"(tau_waad = {result.tau_waad:.3f}, k = {result.config.coupling_k})"
    )
    figs = [("waad", waad_figure(result)), ("fai", fai_figure(result)), ("span", span_figure(result))]
    legend = (
        '<p class="legend"><span class="preplan">preplan</span><span class="anchor">anchor</span>'
        '<span class="both">both</span><span class="anchor dom">locally dominated anchor</span>'
        "hover a token for its numbers</p>"
    )
    text = f'<p class="meta">{meta}</p><p class="prompt">{html.escape(result.prompt)}</p>{legend}{highlighted_text_html(result)}'
    return PageSection(sample_id, text, figures=figs, anchor=anchor)


def preplan_page(
    results: Sequence,
    ids: Sequence[str] | None = None,
    *,
    title: str = "Preplan and anchor tokens",
    include_plotlyjs: bool | str = True,
) -> str:
    """One HTML page with a section per result.

    Args:
        include_plotlyjs: True embeds plotly.js once (a self-contained page); a path ending in
            ".js" references a shared copy instead.
    """
    if not results:
        raise ValueError("no results to draw")
    ids = list(ids) if ids is not None else [f"sample {i}" for i in range(len(results))]
    sections = [_section(r, i, f"sample-{n}") for n, (r, i) in enumerate(zip(results, ids))]
    intro = (
        "Li et al. 2025, <i>Attention Illuminates LLM Reasoning</i>: WAAD (windowed attention distance of the "
        "local heads) and FAI (attention a token receives from 10-100 tokens later, global heads). Preplan tokens "
        "sit at the largest WAAD jumps, anchors have the highest FAI."
    )
    return page_html(sections, title=title, intro_html=intro, extra_css=_CSS, plotlyjs=include_plotlyjs)

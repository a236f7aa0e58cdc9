"""Figures of attention sinks and calibrations, drawn from `SinkResult` / `CalibrationResult`.

`sinks_figure` is the page of `interp score sinks` (sinks.html): a layer x head heatmap of
first-token mass, the sink rate per layer (global and windowed layers in their own colours), which
token types become hidden sinks (their share of hidden sinks next to their share of tokens), and,
for a value-weighted run, every head's first-token attention mass against its value-weighted
first-token mass (`value_weighted_sinks`: active and no-op sinks apart). `calibration_figure` shows held-out
accuracy before and after a calibration with its interval.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.plots.common import head_grid

__all__ = [
    "first_token_mass_grid",
    "hidden_sink_types",
    "layer_sink_rates",
    "value_weighted_sinks",
    "sinks_figure",
    "calibration_figure",
]

_KIND_COLOURS = {"active": "#d62728", "no-op": "#1f77b4", "none": "#b0b0b0"}


def first_token_mass_grid(result) -> go.Figure:
    """Layer x head heatmap of the mean first-token mass, with alpha_0 and hidden sinks in the hover."""
    heads = result.to_dataframe()
    n_layers = len(result.layers)
    grid = heads["first_token_mass"].to_numpy().reshape(n_layers, result.n_heads)
    a0 = heads["alpha0"].to_numpy().reshape(n_layers, result.n_heads)
    hid = heads["hidden_per_text"].to_numpy().reshape(n_layers, result.n_heads)
    hover = [
        [f"alpha_0: {a0[i, h]:.3f}<br>hidden sinks per text: {hid[i, h]:.2f}" for h in range(result.n_heads)]
        for i in range(n_layers)
    ]
    fig = head_grid(grid, title="First-token mass per head", colorbar="first-token mass", hover=hover, zmin=0, zmax=1)
    fig.update_yaxes(tickvals=list(range(n_layers)), ticktext=[str(x) for x in result.layers])
    return fig


def hidden_sink_types(result) -> go.Figure:
    """Bars: each token type's share of hidden sinks next to its share of the analysed tokens."""
    table = result.token_type_table()
    fig = go.Figure(
        [
            go.Bar(
                x=table["token_type"],
                y=table["share"],
                name="share of hidden sinks",
                customdata=table["n_hidden"],
                hovertemplate="%{x}: %{y:.1%} of hidden sinks (%{customdata})<extra></extra>",
            ),
            go.Bar(
                x=table["token_type"],
                y=table["base_share"],
                name="share of tokens",
                hovertemplate="%{x}: %{y:.1%} of tokens<extra></extra>",
            ),
        ]
    )
    fig.update_layout(title="Which tokens become hidden sinks", barmode="group", yaxis_tickformat=".0%")
    return fig


def layer_sink_rates(result) -> go.Figure:
    """Bars: Gu et al. sink rate (alpha_0 > eps) per layer, in percent, one colour per layer kind
    (global / windowed W: a windowed layer's alpha_0 averages over the queries that see position 0)."""
    rates = result.layer_sink_rates()
    fig = go.Figure(
        [
            go.Bar(x=part["layer"], y=part["sink_rate_pct"], name=f"{kind} layers",
                   hovertemplate=f"layer %{{x}} ({kind}): %{{y:.1f}}%<extra></extra>")
            for kind, part in rates.groupby("kind", sort=False)
        ]
    )  # fmt: skip
    by_kind = result.kind_sink_rates()
    overall = (
        "; ".join(f"{k} {v:.1f}%" for k, v in by_kind.items())
        if len(by_kind) > 1
        else f"overall {result.sink_rate:.1f}%"
    )
    fig.update_layout(
        title=f"Sink rate per layer (alpha_0 > {result.config.eps}); {overall}",
        xaxis_title="layer",
        yaxis_title="% of (text, head)",
        yaxis_range=[0, 100],
    )
    return fig


def value_weighted_sinks(result) -> go.Figure:
    """Scatter, one point per head (means over texts): first-token attention mass (x) against the
    value-weighted first-token mass (y, attention weighted by ||W_O^h v_j||), coloured by
    active / no-op / not a sink, with the lines y = x and y = noop_ratio x (below it: no-op)."""
    heads = result.to_dataframe()
    ratio = result.config.noop_ratio
    fig = go.Figure()
    for kind, part in heads.groupby("sink_kind", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part["first_token_mass"], y=part["weighted_first_token_mass"], mode="markers", name=f"{kind} sink"
                if kind != "none" else "not a sink", marker={"color": _KIND_COLOURS.get(str(kind)), "size": 7},
                customdata=part[["layer", "head", "alpha0", "value_ratio"]].to_numpy(),
                hovertemplate="layer %{customdata[0]} head %{customdata[1]}<br>first-token mass %{x:.3f}<br>"
                "value-weighted %{y:.3f} (ratio %{customdata[3]:.2f})<br>alpha_0 %{customdata[2]:.3f}<extra></extra>",
            )
        )  # fmt: skip
    for slope, name, dash in ((1.0, "equal shares", "dot"), (ratio, f"no-op below {ratio} x", "dash")):
        fig.add_trace(
            go.Scatter(x=[0, 1], y=[0, slope], mode="lines", name=name, line={"dash": dash, "color": "#555"},
                       hoverinfo="skip")
        )  # fmt: skip
    shares = result.noop_shares()
    share = shares.pop("all")
    by_kind = "; ".join(f"{k} {v:.0f}%" for k, v in shares.items()) if len(shares) > 1 else ""
    fig.update_layout(
        title=f"First-token sinks weighted by ||W_O v||: {share:.0f}% are no-ops"
        + (f" ({by_kind})" if by_kind else ""),
        xaxis_title="first-token attention mass",
        yaxis_title="value-weighted first-token mass",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
    )
    return fig


def sinks_figure(result) -> go.Figure:
    """One page: first-token mass heatmap, sink rate per layer, hidden-sink token types and, for a
    value-weighted run, active and no-op sinks (`value_weighted_sinks`)."""
    grid, rates, types = first_token_mass_grid(result), layer_sink_rates(result), hidden_sink_types(result)
    values = value_weighted_sinks(result) if result.value_weighted else None
    n_layers = len(result.layers)
    titles = [
        f"First-token mass per head ({result.model}, {result.n_texts} texts x {result.position_count.shape[0]} tokens)",
        rates.layout.title.text,
        "Which tokens become hidden sinks (share of hidden sinks vs share of tokens)",
    ]
    heights = [0.55, 0.2, 0.25]
    if values is not None:
        titles.append(values.layout.title.text)
        heights = [0.4, 0.15, 0.17, 0.28]
    fig = make_subplots(rows=len(titles), cols=1, row_heights=heights, vertical_spacing=0.06, subplot_titles=titles)
    heat = grid.data[0]
    top = (0.5, 0.75) if values is None else (0.35, 0.82)  # colour bar beside the heatmap's row
    heat.update(colorbar={"title": {"text": "mass"}, "len": top[0], "y": top[1]})
    fig.add_trace(heat, row=1, col=1)
    for tr in rates.data:
        fig.add_trace(tr, row=2, col=1)
    for tr in types.data:
        fig.add_trace(tr, row=3, col=1)
    if values is not None:
        for tr in values.data:
            fig.add_trace(tr, row=4, col=1)
        fig.update_xaxes(title_text="first-token attention mass", range=[0, 1], row=4, col=1)
        fig.update_yaxes(title_text="value-weighted", range=[0, 1], row=4, col=1)
    fig.update_yaxes(
        autorange="reversed",
        title_text="layer",
        row=1,
        col=1,
        tickvals=list(range(n_layers)),
        ticktext=[str(x) for x in result.layers],
    )
    fig.update_xaxes(title_text="head", dtick=1, row=1, col=1)
    fig.update_xaxes(title_text="layer", row=2, col=1)
    fig.update_yaxes(title_text="%", range=[0, 100], row=2, col=1)
    fig.update_yaxes(tickformat=".0%", row=3, col=1)
    fig.update_layout(
        height=max(900, 22 * n_layers + 650) + (400 if values is not None else 0),
        barmode="group",
        showlegend=True,
        legend={"orientation": "h", "y": -0.05},
    )
    return fig


def calibration_figure(result) -> go.Figure:
    """Held-out accuracy before and after the calibration, with Wilson intervals."""
    acc = result.to_dataframe()
    err_hi = (acc["ci_high"] - acc["accuracy"]).to_numpy()
    err_lo = (acc["accuracy"] - acc["ci_low"]).to_numpy()
    lo, hi = result.difference_interval()
    fig = go.Figure(
        go.Bar(
            x=acc["condition"],
            y=acc["accuracy"],
            error_y={"type": "data", "array": err_hi, "arrayminus": err_lo},
            text=[f"{a:.1%}" for a in acc["accuracy"]],
            textposition="outside",
            hovertemplate="%{x}: %{y:.1%}<extra></extra>",
        )
    )
    heads = ", ".join(f"{l}.{h}" for l, h in result.heads[:8]) + (" ..." if len(result.heads) > 8 else "")
    extra = f", gamma={result.gamma:g}" if result.gamma is not None else ""
    fig.update_layout(
        title=f"{result.config.method} on {result.task}: held-out accuracy (n={len(result.before)}), "
        f"diff {result.accuracy_after - result.accuracy_before:+.1%} [{lo:+.1%}, {hi:+.1%}], "
        f"McNemar p={result.p_value():.2f}<br><sup>heads: {heads or 'none'}{extra}</sup>",
        yaxis_range=[0, 1.05],
        yaxis_tickformat=".0%",
    )
    return fig

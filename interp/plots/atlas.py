"""Figures of the head atlas (`interp.analyses.atlas`): the interactive page, the causal points and the selectors' frontiers.

`atlas_page` is one self-contained HTML page (plotly.js inlined): a layers x heads grid coloured
by any metric at the full length (a menu), and, on clicking a head, that head's profiles against
query position (log axis; masses on the left axis, entropy / distances on the right). The data
are the result's profiles as JSON, rounded to 4 significant digits (about 0.7 MB at 30 layers x
9 heads, 16 metrics, 16 bins; the page stays near 5 MB with plotly.js).
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from interp.analyses.atlas import AtlasResult

__all__ = ["atlas_page", "causal_figure", "frontier_figure"]

_SCALE = ("entropy", "dist", "waad")  # metrics that are not masses (right axis)


def _round(a: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(f"{v:.4g}") for v in row] for row in a]


def atlas_page(result: AtlasResult) -> str:
    """The atlas as one self-contained HTML page (see module docstring)."""
    from plotly.offline import get_plotlyjs

    full = result.full()
    metrics = [*result.metrics, "concentration"]
    grid = {m: _round(full[m]) for m in result.metrics} | {"concentration": _round(result.concentration)}
    data = {
        "layers": list(result.layers),
        "heads": result.n_heads,
        "metrics": metrics,
        "grid": grid,
        "kinds": [[str(k) for k in row] for row in result.kinds],
        "centres": [float(f"{(lo + hi) / 2 + 1:.4g}") for lo, hi in result.bins],
        "profiles": {
            m: [_round(result.profiles[i, :, j]) for i in range(len(result.layers))]
            for j, m in enumerate(result.metrics)
        },
        "scale": list(_SCALE),
    }
    policy = result.policy()
    title = f"Head atlas of {result.model} at {result.config.length} tokens"
    intro = (
        f"{result.n_texts} texts; kinds: "
        + ", ".join(f"{k} {v}" for k, v in result.summary()["kinds"].items())
        + f". The policy (window {policy['window']}, {policy['sinks']} sinks) windows {len(policy['windowed'])} KV heads "
        f"and saves {policy['kv_saved']:.1%} of the KV cache. Colour: the metric at the full length (the last "
        "position bin); click a head for its profiles against query position."
    )
    payload = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the JSON
    options = "".join(
        f'<option value="{html.escape(m)}"{" selected" if m == "distant_" + str(policy["window"]) else ""}>{html.escape(m)}</option>'
        for m in metrics
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328}} #grid,#profile{{width:100%;height:520px}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>
<label>Colour by <select id="metric">{options}</select></label>
<div id="grid"></div><div id="profile"></div>
<script type="application/json" id="atlas-data">{payload}</script>
<script>
const D = JSON.parse(document.getElementById('atlas-data').textContent);
const heads = [...Array(D.heads).keys()];
function drawGrid() {{
  const m = document.getElementById('metric').value;
  const text = D.kinds.map((row, i) => row.map((k, h) => `L${{D.layers[i]}}H${{h}}: ${{k}}<br>${{m}} = ${{D.grid[m][i][h]}}`));
  Plotly.react('grid', [{{type: 'heatmap', z: D.grid[m], x: heads, y: D.layers, text: text, hoverinfo: 'text', colorscale: 'Viridis'}}],
    {{title: m + ' at the full length', xaxis: {{title: 'head', dtick: 1}}, yaxis: {{title: 'layer', autorange: 'reversed'}}}});
}}
function drawProfile(i, h) {{
  const traces = D.metrics.filter(m => D.profiles[m]).map(m => ({{
    type: 'scatter', mode: 'lines+markers', name: m, x: D.centres, y: D.profiles[m][i][h],
    yaxis: D.scale.includes(m) ? 'y2' : 'y', visible: D.scale.includes(m) ? 'legendonly' : true}}));
  Plotly.react('profile', traces, {{title: `L${{D.layers[i]}}H${{h}} (${{D.kinds[i][h]}}): profiles against query position`,
    xaxis: {{title: 'query position', type: 'log'}}, yaxis: {{title: 'mass', range: [0, 1]}},
    yaxis2: {{title: 'nats / positions', overlaying: 'y', side: 'right'}}}});
}}
document.getElementById('metric').addEventListener('change', drawGrid);
drawGrid(); drawProfile(0, 0);
document.getElementById('grid').on('plotly_click', ev => {{
  const p = ev.points[0]; drawProfile(D.layers.indexOf(p.y), p.x);
}});
</script></body></html>
"""


def causal_figure(result: AtlasResult) -> Any:
    """KV cache saved against the all-token loss change (nats/token), one point per condition, coloured by selector."""
    import plotly.graph_objects as go

    df = result.causal_dataframe()
    fig = go.Figure()
    for selector, part in df.groupby("selector", sort=False):
        fig.add_trace(go.Scatter(
            x=part["kv_saved"], y=part["delta_loss"], mode="markers", name=str(selector),
            text=[f"budget {b:.0%}, {n} KV heads, seed {s}, key-token change {k:+.3f}, recall {r:.2f}" for b, n, s, k, r in
                  zip(part["budget"], part["n_kv_heads"], part["seed"], part["delta_key_loss"], part["recall"])],
        ))  # fmt: skip
    fig.add_hline(
        y=result.config.loss_tolerance, line_dash="dot", annotation_text=f"{result.config.loss_tolerance} nats/token"
    )
    fig.update_layout(
        title=f"Windowing KV heads of {result.model} (window {result.config.policy_window}, {result.config.sinks} sinks): "
        "KV cache saved against the loss change over all tokens",
        xaxis_title=f"KV cache saved at {result.config.length} tokens",
        yaxis_title="loss change, all tokens (nats/token)",
    )
    return fig


def frontier_figure(result: AtlasResult) -> Any:
    """Each selector's frontier: KV cache saved against the key-token loss change (mean over seeds, 95% interval)."""
    import plotly.graph_objects as go

    df = result.frontier_dataframe()
    fig = go.Figure()
    for selector, part in df.groupby("selector", sort=False):
        part = part.sort_values("kv_saved")
        fig.add_trace(go.Scatter(
            x=part["kv_saved"], y=part["delta_key_loss"], mode="lines+markers", name=str(selector),
            error_y={"type": "data", "symmetric": False, "array": (part["delta_key_loss_hi"] - part["delta_key_loss"]).fillna(0),
                     "arrayminus": (part["delta_key_loss"] - part["delta_key_loss_lo"]).fillna(0)},
            text=[f"budget {b:.0%}, recall {r:.2f}" for b, r in zip(part["budget"], part["recall"])],
        ))  # fmt: skip
    cfg = result.config
    fig.add_hline(y=cfg.loss_tolerance, line_dash="dot", annotation_text=f"{cfg.loss_tolerance} nats/token")
    fig.update_layout(
        title=f"Selectors' frontiers on {result.model} at {cfg.length} tokens: KV cache saved against the loss change "
        f"on key tokens (LongPPL, K = {cfg.key_window})",
        xaxis_title=f"KV cache saved at {cfg.length} tokens",
        yaxis_title="key-token loss change (nats/token)",
    )
    return fig

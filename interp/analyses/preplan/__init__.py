"""Preplan and anchor tokens: the reasoning rhythm read off local and global attention heads.

Li et al. 2025, "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables
Fine-Grained Policy Optimization" (arXiv 2510.13554); definitions in
docs/METRICS.md#preplan-and-anchor-tokens. Over the response positions R of a prompt + response:

- every head (l, h) of the chosen layers gets a span d(l, h) = mean over t in R of dist_t; the
  heads in the lowest `local_quantile` of d are *local*, those in the highest
  `global_quantile` are *global*;
- WAAD_t = mean over local heads of waad_t(W) (windowed attention distance: how far back the
  token that is being written reaches, clipped at W);
- FAI_s = mean over global heads of band_s(lo, hi) (how much attention token s receives from
  the tokens lo..hi after it);
- preplan tokens: Delta_t = |WAAD_t - WAAD_{t+1}| in its top `preplan_quantile` (a jump in
  the local rhythm: a phrase ends and the next one reaches further back);
- anchor tokens: FAI_s in its top `anchor_quantile` (tokens later reasoning keeps returning to);
- coupling: an anchor t is *locally dominated* when WAAD_t <= tau_waad and a preplan token lies
  in the k tokens before it.

Every attention number comes from `interp.kernels.attention_stats` (row statistics dist and
waad on the response rows, column statistic band), computed layer by layer as the forward
pass runs: only [layer, head, response] statistics are kept, so memory is linear in T. No
[T, T] attention is built here.

- `config`: `PreplanConfig`, `default_layers`.
- `statistics`: `layer_statistics` (the kernel on one layer's captured q, k), `PreplanStats`.
- `findings`: the pure functions (`bottom_quantile`, `top_quantile`, `head_groups`,
  `waad_jumps`, `couple_anchors`) and `analyse` -> `PreplanFindings`.
- `results`: `PreplanResult` (one prompt: its findings and what they were found in) and
  `PreplanRun` (every prompt of a run).

This package is pure. The runner that drives the model (greedy answer, one forward pass per
prompt streamed through `interp.hooks.stream_layers`) is `interp.experiments.preplan`; the
prompts come from `interp.datasets.prompts`.
"""

from interp.analyses.preplan.config import PreplanConfig, default_layers
from interp.analyses.preplan.findings import (
    PreplanFindings,
    analyse,
    bottom_quantile,
    couple_anchors,
    head_groups,
    top_quantile,
    waad_jumps,
)
from interp.analyses.preplan.results import PreplanResult, PreplanRun
from interp.analyses.preplan.statistics import PreplanStats, layer_statistics

__all__ = [
    "PreplanConfig",
    "PreplanResult",
    "PreplanRun",
    "PreplanStats",
    "PreplanFindings",
    "default_layers",
    "bottom_quantile",
    "top_quantile",
    "head_groups",
    "waad_jumps",
    "couple_anchors",
    "layer_statistics",
    "analyse",
]

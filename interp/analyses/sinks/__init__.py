"""Attention sinks: first-token sinks (Gu et al. 2024) and hidden sinks (Yu et al. 2024).

Everything here is computed from the column and row statistics of `interp.kernels`, one layer
at a time, so a long text (8k tokens) never needs a [T, T] attention matrix:

- alpha_j = recv_mean_j, the attention key j receives averaged over the queries that may see
  it (Gu et al. 2024, "When Attention Sink Emerges in Language Models"). A (text, layer, head)
  counts as a sink at position j when alpha_j > eps (eps = 0.3); the *sink rate* is the
  percentage of (text, layer, head) that do, reported for j = 0 and, as a profile, for every j.
- first-token mass: sink_i(n) (the mass of query i on the first n tokens) averaged over the
  query rows that can see more than the first n tokens (i >= n). With n = 1 it is alpha_0
  without the trivial row 0 (which can only attend to itself):
  alpha_0 = (1 + (T - 1) * first_token_mass) / T.
- hidden sinks (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks", ACT): per
  head S = {j : recv_mean_j > tau} (tau = 0.1); the first member of S (nearly always
  position 0) is the ordinary sink and is not counted as hidden.

Keys near the end of a text are averaged over very few queries (the last key over one: its
alpha is the last query's self-attention), so they cross tau by chance. ``min_queries``
(default 16) keeps only keys seen by at least that many queries as candidate sinks;
``min_queries=1`` is docs/METRICS.md / Yu et al. exactly.

Value-weighted sinks (docs/METRICS.md#value-weighted-sinks): attention weight alone overstates
what a sink does. With key weight w_j = ||W_O^h v_j|| (`interp.hooks.value_norms`) the kernel's
``w_sink`` is the sink's share of sum_j a_ij w_j, the size of what the head writes (Kobayashi et
al. 2020); Gu et al. 2024 find that first-token sinks often carry small values. A first-token
sink whose value-weighted mass is under ``noop_ratio`` (0.5) of its attention mass is a *no-op*,
else *active*.

- `config`: `SinkConfig`.
- `measures`: the pure functions (`first_token_mass`, `sink_rate`, `sink_members`,
  `hidden_sinks`, `token_type`, `value_ratio`, `noop_sinks`).
- `results`: `SinkResult` and its tables.
- `records`: one window's statistics to a JSON-able record (`reduce_layer`), records to a
  result (`combine`).

This package is pure. The runner that drives the model, one forward pass per text through
``interp.hooks.stream_layers``, is `interp.experiments.sinks`; the texts come from
`interp.datasets.texts`.
"""

from interp.analyses.sinks.config import SinkConfig
from interp.analyses.sinks.measures import (
    TOKEN_TYPES,
    first_token_mass,
    hidden_sinks,
    noop_sinks,
    sink_members,
    sink_rate,
    token_type,
    value_ratio,
)
from interp.analyses.sinks.records import combine, reduce_layer
from interp.analyses.sinks.results import SinkResult

__all__ = [
    "SinkConfig",
    "SinkResult",
    "TOKEN_TYPES",
    "reduce_layer",
    "combine",
    "first_token_mass",
    "sink_rate",
    "sink_members",
    "hidden_sinks",
    "token_type",
    "value_ratio",
    "noop_sinks",
]

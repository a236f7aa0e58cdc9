"""The head atlas: how every head of a model uses a long context, and which KV heads a cache may window.

Profiles (`interp.analyses.atlas.profiles`): per head and log-spaced bin of query positions, the
row statistics of `interp.kernels.attention_stats`, and each head's kind. The policy
(`interp.analyses.atlas.policy`): KV heads are the decision units; a windowed KV head keeps its
first ``sinks`` keys and its last ``window`` keys (StreamingLLM per head, as DuoAttention and
RazorAttention split heads into streaming and full ones); selectors rank the units. The causal
check (`interp.analyses.atlas.causal`): loss changes over all tokens and over LongPPL's key tokens,
needle recall, 95% intervals, each selector's frontier. `interp.analyses.atlas.result` holds the
`AtlasResult`.

Pure: the runner (`interp.experiments.atlas`) drives the model.
"""

from interp.analyses.atlas.causal import best_savings, condition_row, frontier, key_tokens
from interp.analyses.atlas.config import LONGPPL_CONTEXT, LONGPPL_STEP, AtlasConfig
from interp.analyses.atlas.policy import (
    SELECTORS,
    Selector,
    decision_units,
    duo_attention_heads,
    group_max,
    kv_saved,
    query_heads,
    select_units,
    windowed_from_duo,
    windowed_from_json,
)
from interp.analyses.atlas.profiles import (
    KINDS,
    WEIGHTED_ROW_METRICS,
    classify,
    concentration,
    metric_names,
    position_bins,
    reduce_layer,
)
from interp.analyses.atlas.result import AtlasResult, combine, with_causal, with_scores

__all__ = [
    "AtlasConfig",
    "AtlasResult",
    "KINDS",
    "LONGPPL_CONTEXT",
    "LONGPPL_STEP",
    "SELECTORS",
    "Selector",
    "best_savings",
    "classify",
    "combine",
    "concentration",
    "condition_row",
    "decision_units",
    "duo_attention_heads",
    "frontier",
    "group_max",
    "key_tokens",
    "kv_saved",
    "metric_names",
    "WEIGHTED_ROW_METRICS",
    "position_bins",
    "query_heads",
    "reduce_layer",
    "select_units",
    "windowed_from_duo",
    "windowed_from_json",
    "with_causal",
    "with_scores",
]

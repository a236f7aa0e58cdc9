"""Hooks: capture or change every attention head of a real HF model or a TransformerLens bridge.

Only this package knows model internals (see `adapters`). Everything else sees the canonical
view of `sites`: post-RoPE q, k, v, per-head output z and the residual stream, per layer.
`stream` hands each layer's q and k to a callback as the layer runs (`stream_layers`,
`streaming`): the one way runners reduce attention layer by layer. `run_with_cache` is the
notebook's one call from text to logits and a `Cache` (TransformerLens names, ``cache.pattern``,
``cache.stats``, ``stop_at_layer``). `prefix` computes each
shared token prefix of many sequences once, with a reused KV cache (`prefix_tree`, `tree_rows`).
`values` gives each key's ||v_j|| and ||W_O^h v_j|| (`value_norms`, `Capture.value_norms`).
"""

from interp.hooks.adapters import SUPPORTED_MODEL_TYPES, HFAdapter, TLAdapter, adapter_for
from interp.hooks.capture import Cache, Capture, capture, check_layers
from interp.hooks.edits import (
    ComputedKeyBias,
    Edit,
    KeyBias,
    WindowAttention,
    ablate_head,
    intervene,
    key_bias,
    patch_head,
    patch_site,
    scale_head,
    start_at_layer,
    uniform_attention,
    window_attention,
)
from interp.hooks.prefix import PrefixNode, RowStats, SequenceRows, prefix_tree, tree_cost, tree_rows
from interp.hooks.run import run_with_cache
from interp.hooks.sites import HEAD_SITES, KV_SITES, SITES
from interp.hooks.stream import LayerCallback, Streamed, stream_layers, streaming
from interp.hooks.values import ValueNorms, value_norms

__all__ = [
    "SITES",
    "HEAD_SITES",
    "KV_SITES",
    "SUPPORTED_MODEL_TYPES",
    "HFAdapter",
    "TLAdapter",
    "adapter_for",
    "Cache",
    "Capture",
    "capture",
    "run_with_cache",
    "check_layers",
    "LayerCallback",
    "Streamed",
    "streaming",
    "stream_layers",
    "Edit",
    "KeyBias",
    "ComputedKeyBias",
    "intervene",
    "ablate_head",
    "scale_head",
    "patch_head",
    "patch_site",
    "uniform_attention",
    "key_bias",
    "window_attention",
    "WindowAttention",
    "start_at_layer",
    "PrefixNode",
    "prefix_tree",
    "tree_cost",
    "SequenceRows",
    "RowStats",
    "tree_rows",
    "ValueNorms",
    "value_norms",
]

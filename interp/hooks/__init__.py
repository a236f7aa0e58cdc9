"""Hooks: capture or change every attention head of a real HF model or a TransformerLens bridge.

Only this package knows model internals (see `adapters`). Everything else sees the canonical
view of `sites`: post-RoPE q, k, v, per-head output z and the residual stream, per layer.
"""

from interp.hooks.adapters import SUPPORTED_MODEL_TYPES, HFAdapter, TLAdapter, adapter_for
from interp.hooks.capture import Capture, capture, check_layers
from interp.hooks.edits import (
    Edit,
    KeyBias,
    ablate_head,
    intervene,
    key_bias,
    patch_head,
    patch_site,
    scale_head,
    start_at_layer,
    uniform_attention,
)
from interp.hooks.sites import HEAD_SITES, KV_SITES, SITES

__all__ = [
    "SITES",
    "HEAD_SITES",
    "KV_SITES",
    "SUPPORTED_MODEL_TYPES",
    "HFAdapter",
    "TLAdapter",
    "adapter_for",
    "Capture",
    "capture",
    "check_layers",
    "Edit",
    "KeyBias",
    "intervene",
    "ablate_head",
    "scale_head",
    "patch_head",
    "patch_site",
    "uniform_attention",
    "key_bias",
    "start_at_layer",
]

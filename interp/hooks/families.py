"""The table of model families: module paths and where each config keeps its attention settings.

Each family differs only in module paths and in where its config keeps the sliding window, which
live in ``_HF_LAYOUTS``; adding a family is one row there. `read_layer_attention` reads, per
layer, what the kernel needs to reproduce that layer's softmax (`LayerAttention`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import InterpError

__all__ = ["LayerAttention", "SUPPORTED_MODEL_TYPES", "UNSUPPORTED_MODEL_TYPES", "read_layer_attention"]


@dataclass(frozen=True)
class LayerAttention:
    """What the kernel needs to reproduce one layer's attention softmax exactly.

    Attributes:
        scale: the factor on q.k (the module's ``scaling``: 1/sqrt(d_head) for Llama,
            query_pre_attn_scalar**-0.5 for Gemma, 1/(sqrt(d_head) (layer+1)) for GPT-2 with
            ``scale_attn_by_inverse_layer_idx``).
        causal: whether query i sees only keys j <= i.
        sliding_window: None, or W: query i sees keys with i - j < W (HF's sliding mask).
        softcap: None, or c: scores become c tanh(s / c) before the mask (Gemma 2/3).
        sink_logits: whether the layer has learned per-head sink logits (GPT-OSS ``sinks``)
            that join the softmax denominator; their values live on the module.
    """

    scale: float
    causal: bool = True
    sliding_window: int | None = None
    softcap: float | None = None
    sink_logits: bool = False


@dataclass(frozen=True)
class _HFLayout:
    layers: str  # dotted path from the CausalLM to the list of decoder layers
    attn: str = "self_attn"  # attribute of a decoder layer holding the attention module
    o_proj: str = "o_proj"  # attribute of the attention module holding the output projection
    mlp: str = "mlp"  # attribute of a decoder layer holding the MLP (or MoE block)
    # Where the family's masks take the sliding window from when the config has no
    # ``layer_types``: "config" = config.sliding_window on every layer (Mistral), None = never.
    window: str | None = None
    # Whether the family passes the module's ``attn_logit_softcapping`` to attention (Gemma 2).
    # Gemma 3 keeps the attribute but transformers 5.x never applies it, so neither do we.
    softcap: bool = False


_LLAMA_LIKE = _HFLayout(layers="model.layers")
_WINDOWED = _HFLayout(layers="model.layers", window="config")
_HF_LAYOUTS: dict[str, _HFLayout] = {
    "llama": _LLAMA_LIKE,
    "mistral": _WINDOWED,
    "mixtral": _WINDOWED,
    "qwen2": _LLAMA_LIKE,  # windows come from config.layer_types (use_sliding_window, max_window_layers)
    "qwen2_moe": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "qwen3_moe": _WINDOWED,
    "gemma": _LLAMA_LIKE,
    "gemma2": _HFLayout(layers="model.layers", softcap=True),  # local/global layers, logit soft-cap
    "gemma3_text": _LLAMA_LIKE,  # local/global layers from layer_types
    "gpt_oss": _LLAMA_LIKE,  # learned sink logits (module.sinks), windows from layer_types
    "olmo": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi": _HFLayout(layers="model.layers", o_proj="dense"),
    "phi3": _WINDOWED,
    "starcoder2": _WINDOWED,
    "cohere": _LLAMA_LIKE,
    "gpt_neox": _HFLayout(layers="gpt_neox.layers", attn="attention", o_proj="dense"),
    "gpt2": _HFLayout(layers="transformer.h", attn="attn", o_proj="c_proj"),
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_HF_LAYOUTS))

# Families transformers has but we cannot wrap without re-implementing their attention.
UNSUPPORTED_MODEL_TYPES = {
    "falcon": "its attention module computes SDPA itself (no AttentionInterface), and ALiBi variants add "
    "a position bias the kernel does not model",
    "gptj": "its attention module computes attention itself (no AttentionInterface)",
    "bloom": "ALiBi position biases are not modelled by the kernel",
    "mpt": "ALiBi position biases are not modelled by the kernel",
    "gemma3": "this is the multimodal Gemma 3 wrapper: load the text model with "
    "Gemma3ForCausalLM (model_type 'gemma3_text')",
}


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def read_layer_attention(model: Any, layout: _HFLayout) -> tuple[LayerAttention, ...]:
    """Per-layer softmax settings of a HF model, read from its config and attention modules.

    Raises:
        InterpError: a layer kind or window the kernel cannot reproduce (chunked or linear
            attention, a bidirectional window).
    """
    config = _text_config(model.config)
    layers = list(_get(model, layout.layers))
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    out = []
    for i, layer in enumerate(layers):
        attn = getattr(layer, layout.attn)
        kind = types[i] if types else ("sliding_attention" if layout.window == "config" and window else "full_attention")
        if kind not in ("full_attention", "sliding_attention"):
            raise InterpError(
                f"layer {i} of this {config.model_type} model uses '{kind}' attention, which the statistics "
                "kernel cannot reproduce (it models full and sliding-window softmax attention only)"
            )
        w = int(window) if kind == "sliding_attention" and window else None
        causal = bool(getattr(attn, "is_causal", True))
        if w is not None and not causal:
            raise InterpError(
                f"layer {i} has a bidirectional sliding window (use_bidirectional_attention): the kernel's "
                "window is causal only; load the model with causal attention"
            )
        scale = getattr(attn, "scaling", None)
        if scale is None:
            scale = float(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads) ** -0.5
        cap = getattr(attn, "attn_logit_softcapping", None) if layout.softcap else None
        sinks = isinstance(getattr(attn, "sinks", None), torch.Tensor)
        out.append(LayerAttention(scale=float(scale), causal=causal, sliding_window=w, softcap=float(cap) if cap else None, sink_logits=sinks))
    return tuple(out)

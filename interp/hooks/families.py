"""The table of model families: module paths and where each config keeps its attention settings.

Each family differs only in module paths and in where its config keeps the sliding window, which
live in ``_HF_LAYOUTS``; adding a family is one row there. `read_layer_attention` reads, per
layer, what the kernel needs to reproduce that layer's softmax (`LayerAttention`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from interp.errors import InterpError

__all__ = [
    "ArchInfo",
    "LayerAttention",
    "SUPPORTED_MODEL_TYPES",
    "UNSUPPORTED_MODEL_TYPES",
    "head_output_weights",
    "head_pairs",
    "output_projection",
    "read_layer_attention",
]


def head_pairs(heads: Sequence[Any]) -> tuple[tuple[int, int], ...]:
    """``heads`` as (layer, head) int pairs, or an error naming the malformed one (whether the
    heads exist is `ArchInfo.check_heads`: it knows the model)."""
    out = []
    for spec in heads:
        try:
            layer, head = (int(x) for x in spec)
        except (TypeError, ValueError) as err:
            raise InterpError(
                f"head spec {spec!r} is not a (layer, head) pair: write heads as LAYER.HEAD, e.g. 12.3"
            ) from err
        out.append((layer, head))
    return tuple(out)


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


def output_projection(model: Any, layout: _HFLayout, layer: int) -> Any:
    """The attention output projection module (o_proj, dense, c_proj) of ``layer``."""
    return getattr(getattr(list(_get(model, layout.layers))[layer], layout.attn), layout.o_proj)


def head_output_weights(proj: Any, layer: int, n_heads: int, d_head: int) -> torch.Tensor:
    """W_O of every head of ``layer`` from its output projection ``proj``: [head, d_head, d_model],
    detached, in the weights' dtype.

    Head h adds ``z_h @ W_O[h]`` to the attention block's output, z_h its [pos, d_head] slice of
    the o_proj input (head-major, as the ``z`` site reads it). An o_proj bias is added once per
    position, not per head or key, so it is no part of W_O. ``nn.Linear`` keeps [d_model, in]
    (transposed here); GPT-2's ``Conv1D`` keeps [in, d_model].

    Raises:
        InterpError: an output projection of another kind, or one whose input is not n_heads x d_head.
    """
    from transformers.pytorch_utils import Conv1D

    if isinstance(proj, Conv1D):
        weight = proj.weight
    elif isinstance(proj, torch.nn.Linear):
        weight = proj.weight.T
    else:
        raise InterpError(
            f"layer {layer}'s output projection is a {type(proj).__name__}, not a Linear or Conv1D: "
            "interp cannot read its per-head weights"
        )
    if weight.shape[0] != n_heads * d_head:
        raise InterpError(
            f"layer {layer}'s output projection takes {weight.shape[0]} inputs, not {n_heads} heads x {d_head}"
        )
    return weight.detach().reshape(n_heads, d_head, weight.shape[1])


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
        kind = (
            types[i] if types else ("sliding_attention" if layout.window == "config" and window else "full_attention")
        )
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
        out.append(
            LayerAttention(
                scale=float(scale),
                causal=causal,
                sliding_window=w,
                softcap=float(cap) if cap else None,
                sink_logits=sinks,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class ArchInfo:
    """Architecture facts of a loaded causal LM.

    Attributes:
        n_layers: number of decoder layers.
        n_heads: query heads per layer.
        n_kv_heads: key/value heads per layer (``n_heads`` for MHA, fewer for GQA/MQA).
        d_head: per-head dimension of q and k.
        d_model: residual stream width.
        n_ctx: the model's context length in tokens.
        scale: the softmax scale of layer 0 (1/sqrt(d_head) for Llama); layers may differ, so
            analyses use ``attention[layer]`` (or `LoadedModel.attention_kwargs`) instead.
        model_type: the HF ``config.model_type`` (the adapter table key).
        attention: per layer, the softmax settings the kernel needs (`LayerAttention`: scale,
            causal, sliding window, soft-cap, learned sink logits). Empty only for an ArchInfo
            built by hand from config facts.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    scale: float
    model_type: str
    attention: tuple[LayerAttention, ...] = ()

    def layer_attention(self, layer: int) -> LayerAttention:
        """Softmax settings of ``layer`` (all layers share ``scale`` when built without a model)."""
        self.check_layer(layer)
        return self.attention[layer] if self.attention else LayerAttention(scale=self.scale)

    @property
    def group(self) -> int:
        """Query heads per kv head."""
        return self.n_heads // self.n_kv_heads

    @property
    def kv_map(self) -> list[int]:
        """kv_map[h] = the kv head that query head h reads (HF ``repeat_kv`` order)."""
        return [h // self.group for h in range(self.n_heads)]

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` or raise a clear error when it is out of range."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise InterpError(
                f"layer {layer} out of range: the model has {self.n_layers} layers (0-{self.n_layers - 1})"
            )
        return layer

    def check_head(self, head: int) -> int:
        """Return ``head`` or raise a clear error when it is out of range."""
        if not isinstance(head, int) or not 0 <= head < self.n_heads:
            raise InterpError(
                f"head {head} out of range: the model has {self.n_heads} query heads per layer (0-{self.n_heads - 1})"
            )
        return head

    def check_heads(self, heads: Sequence[Any], hint: str = "") -> tuple[tuple[int, int], ...]:
        """``heads`` as (layer, head) int pairs (`head_pairs`), each a head of this model, or an
        error naming the first one out of range (``hint`` ends the message, e.g. where they came from)."""
        out = head_pairs(heads)
        for layer, head in out:
            if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
                raise InterpError(
                    f"head {layer}.{head} out of range: the model has {self.n_layers} layers (0-{self.n_layers - 1}) "
                    f"and {self.n_heads} heads per layer (0-{self.n_heads - 1}){hint}"
                )
        return out

    @classmethod
    def from_config(cls, config: Any, attention: Sequence[LayerAttention] = ()) -> ArchInfo:
        """Read the facts from a HuggingFace config (Llama, Mistral, Qwen, GPT-2 field names).

        Args:
            attention: per-layer softmax settings read from the model's modules (see
                `interp.hooks.adapters.read_layer_attention`); the config alone cannot know
                them all (GPT-2 scales by layer, GPT-OSS keeps sink logits on the module).
        """
        text = getattr(config, "text_config", None) or config
        n_heads = getattr(text, "num_attention_heads", None) or text.n_head
        d_model = getattr(text, "hidden_size", None) or text.n_embd
        n_kv = getattr(text, "num_key_value_heads", None) or n_heads
        d_head = getattr(text, "head_dim", None) or d_model // n_heads
        n_layers = getattr(text, "num_hidden_layers", None) or text.n_layer
        n_ctx = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None) or 2048
        scale = getattr(text, "query_pre_attn_scalar", None)
        scale = float(scale) ** -0.5 if scale else float(d_head) ** -0.5
        attention = tuple(attention)
        if attention:
            scale = attention[0].scale
        return cls(
            n_layers=int(n_layers),
            n_heads=int(n_heads),
            n_kv_heads=int(n_kv),
            d_head=int(d_head),
            d_model=int(d_model),
            n_ctx=int(n_ctx),
            scale=scale,
            model_type=str(text.model_type),
            attention=attention,
        )

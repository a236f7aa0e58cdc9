"""The table of model adapters: the only place that knows model internals.

An adapter maps the canonical sites of `interp.hooks.sites` onto one model family:

- ``HFAdapter`` wraps a real ``transformers`` model. q, k and v are reached through a
  registered attention function (``AttentionInterface``) that receives post-RoPE q and the
  pre-repeat GQA k and v, runs the listeners, then calls the implementation the model was
  loaded with (``sdpa``, ``eager``, ``flex_attention``, flash): the model is never switched to
  eager attention and no [T, T] tensor is built. The routing is switched on only while a
  capture or an edit is attached and switched off (config restored, registration removed)
  when the last one is removed, so no global state outlives a ``with`` block.
  z, the residual stream and block outputs are reached with ordinary module hooks.
- ``TLAdapter`` reads the hook points of a transformer-lens ``TransformerBridge``.

The family table (module paths, where each config keeps its window) is `interp.hooks.families`;
adding a family is one row there. The attention function checks at every call that the model
still passes the settings `interp.hooks.families.read_layer_attention` read.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch

from interp.errors import InterpError
from interp.hooks._tl import TLAdapter
from interp.hooks._window_blocks import windowed_blocks
from interp.hooks._window_heads import apply_windows
from interp.hooks.families import (  # noqa: F401  (re-exported)
    _HF_LAYOUTS,
    SUPPORTED_MODEL_TYPES,
    UNSUPPORTED_MODEL_TYPES,
    LayerAttention,
    _get,
    _HFLayout,
    head_output_weights,
    output_projection,
    read_layer_attention,
)
from interp.hooks.sites import SITES, Listener, _Handle, run_listeners
from interp.protocols import Adapter, Model

__all__ = [
    "adapter_for",
    "HFAdapter",
    "TLAdapter",
    "LayerAttention",
    "SUPPORTED_MODEL_TYPES",
    "UNSUPPORTED_MODEL_TYPES",
]


def adapter_for(model_type: str, backend: str = "hf"):
    """The adapter for a HF ``model_type`` and backend, or a clear error if there is none."""
    if model_type in UNSUPPORTED_MODEL_TYPES:
        raise InterpError(
            f"model type '{model_type}' is not supported: {UNSUPPORTED_MODEL_TYPES[model_type]}. "
            f"Supported are {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if model_type not in _HF_LAYOUTS:
        raise InterpError(
            f"no hook adapter for model type '{model_type}': supported are {', '.join(SUPPORTED_MODEL_TYPES)}. "
            "Add a row to interp/hooks/families.py:_HF_LAYOUTS if the family uses the same module layout "
            "and dispatches attention through transformers' AttentionInterface"
        )
    if backend == "tl":
        return TLAdapter(_HF_LAYOUTS[model_type])
    return HFAdapter(_HF_LAYOUTS[model_type])


# --------------------------------------------------------------------------------------------
# HuggingFace
# --------------------------------------------------------------------------------------------

# interp_<base> name -> number of models currently routed through it (registration lives only
# while some capture or edit is attached).
_ACTIVE: dict[str, int] = {}


def _check_call(module, kwargs: dict) -> None:
    """Refuse a call whose softmax settings differ from what the kernel was told (no wrong numbers)."""
    spec: LayerAttention = module._interp_spec
    scaling = kwargs.get("scaling")
    if scaling is not None and not math.isclose(float(scaling), spec.scale, rel_tol=1e-6):
        raise InterpError(f"layer {module._interp_layer} ran with scale {scaling} but interp read {spec.scale}")
    cap = kwargs.get("softcap")
    if (cap or None) != spec.softcap:
        raise InterpError(f"layer {module._interp_layer} ran with soft-cap {cap} but interp read {spec.softcap}")
    window = kwargs.get("sliding_window")
    if window and spec.sliding_window is not None and int(window) != spec.sliding_window:
        raise InterpError(
            f"layer {module._interp_layer} ran with sliding window {window} but interp read {spec.sliding_window}"
        )
    if (kwargs.get("s_aux") is not None) != spec.sink_logits:
        raise InterpError(f"layer {module._interp_layer}: learned sink logits present/absent unlike what interp read")


def _check_full_cache(module, key: torch.Tensor, position_ids) -> None:
    """Refuse to hand out keys from a cache that dropped some (HF's sliding-window cache keeps
    only the last W keys of a windowed layer): their indices would not be token positions."""
    if position_ids is None or not isinstance(position_ids, torch.Tensor) or position_ids.numel() == 0:
        return
    needed = int(position_ids.max()) + 1
    if key.shape[-2] < needed:
        raise InterpError(
            f"layer {module._interp_layer} sees {key.shape[-2]} keys for a query at position {needed - 1}: its KV "
            "cache dropped keys (a sliding-window cache), so captured keys would not line up with token positions. "
            "Decode with a full cache, past_key_values=lm.new_cache() (transformers' DynamicCache() without a "
            "config): the model still applies its window through the mask, with identical logits"
        )


def _interp_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention function registered as ``interp_<base>``: listeners on q/k/v, then the base.

    ``query`` is [batch, head, pos, d_head] after RoPE, ``key``/``value`` are
    [batch, kv_head, key_pos, d_head] before the GQA repeat (and after any KV-cache update).
    Key-bias edits append one extra dimension to q and k per edit (q gets ``bias/scale`` on the
    edited head, k an indicator of the biased keys), which adds ``bias`` to those scores inside
    the fused kernel without building a [T, T] mask.
    """
    state = getattr(module, "_interp", None)
    if state is None:
        raise InterpError("an attention module without interp state was routed through interp: re-wrap the model")
    _check_call(module, kwargs)
    if state["q"] or state["k"] or state["v"]:
        _check_full_cache(module, key, kwargs.get("position_ids"))
    query = run_listeners(state["q"], query)
    key = run_listeners(state["k"], key)
    value = run_listeners(state["v"], value)
    if state["bias"]:
        scaling = kwargs.get("scaling") or module.scaling
        extra_q, extra_k = [], []
        for fn in state["bias"]:
            qc, kc = fn(query, key, scaling)
            extra_q.append(qc)
            extra_k.append(kc)
        query = torch.cat([query, *extra_q], dim=-1)
        key = torch.cat([key, *extra_k], dim=-1)
        kwargs["scaling"] = scaling
    # Local layers on CPU run per query block, over the keys in reach only (see _window_blocks).
    out = windowed_blocks(_base_function(module), module, query, key, value, attention_mask, **kwargs)
    if state.get("window"):  # per-head StreamingLLM windows (window_attention; see _window_heads)
        attn, weights = out
        attn = apply_windows(
            _base_function(module), module, query, key, value, attention_mask, attn, state["window"], kwargs
        )
        return attn, weights
    return out


def _base_function(module) -> Callable:
    """The attention function the module would have called without interp."""
    base = module._interp_base
    if base == "eager":
        # Eager is not in the registry: each modeling file has its own eager_attention_forward
        # (Gemma's applies the soft-cap, GPT-OSS's the sink logits).
        fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
        if fn is None:
            raise InterpError(
                f"{type(module).__name__} has no module-level eager_attention_forward: this family cannot be "
                "wrapped on eager attention; load it with attn_implementation='sdpa'"
            )
        return fn
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[base]


def _route(name: str, base: str, on: bool) -> None:
    """Register (on) or unregister (off, when no model uses it) the ``interp_<base>`` functions."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    masks = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    if on:
        if _ACTIVE.get(name, 0) == 0:
            AttentionInterface._global_mapping[name] = _interp_attention
            if base in masks:
                masks[name] = masks[base]
        _ACTIVE[name] = _ACTIVE.get(name, 0) + 1
        return
    _ACTIVE[name] -= 1
    if _ACTIVE[name] == 0:
        del _ACTIVE[name]
        AttentionInterface._global_mapping.pop(name, None)
        masks.pop(name, None)


_SUPPORTED_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")


class HFAdapter(Adapter):
    """Hooks for a HuggingFace causal LM (see module docstring)."""

    backend = "hf"

    def __init__(self, layout: _HFLayout):
        self.layout = layout
        self._attached = 0  # listeners attached now; routing is on while > 0
        self._restore: list[tuple[Any, str]] = []

    def layers(self, lm: Model) -> list:
        return list(_get(lm.hf_model, self.layout.layers))

    def attention(self, lm: Model, layer: int):
        return getattr(self.layers(lm)[layer], self.layout.attn)

    def layer_attention(self, model) -> tuple[LayerAttention, ...]:
        """Per-layer softmax settings (see `read_layer_attention`)."""
        return read_layer_attention(model, self.layout)

    def sink_logits(self, lm: Model, layer: int) -> torch.Tensor | None:
        """The layer's learned sink logits [head] (float32, detached), or None."""
        sinks = getattr(self.attention(lm, layer), "sinks", None)
        return sinks.detach().float() if isinstance(sinks, torch.Tensor) else None

    def head_output_weights(self, lm: Model, layer: int) -> torch.Tensor:
        """W_O per head of ``layer``, [head, d_head, d_model] (see `head_output_weights`)."""
        proj = output_projection(lm.hf_model, self.layout, layer)
        return head_output_weights(proj, layer, lm.arch.n_heads, lm.arch.d_head)

    def install(self, lm: Model) -> None:
        """Give each attention module its listener registry and settings; the config is untouched.

        Raises:
            InterpError: an attention implementation interp cannot wrap.
        """
        model = lm.hf_model
        base = model.config._attn_implementation or "sdpa"
        if base.startswith("interp_"):
            base = base[len("interp_") :]
        if base not in _SUPPORTED_IMPLEMENTATIONS:
            raise InterpError(
                f"the model runs attention implementation '{base}', which interp cannot wrap: load it with "
                f"attn_implementation= one of {', '.join(_SUPPORTED_IMPLEMENTATIONS)}"
            )
        self.base = base
        for i, (layer, spec) in enumerate(zip(self.layers(lm), lm.arch.attention)):
            attn = getattr(layer, self.layout.attn)
            attn._interp_base = base
            attn._interp = {"q": [], "k": [], "v": [], "bias": [], "window": []}
            attn._interp_layer = i
            attn._interp_spec = spec
            if base == "eager":
                _base_function(attn)  # fail now, not at the first forward pass

    def _switch(self, lm: Model, on: bool) -> None:
        """Route attention through ``interp_<base>`` (on) or give the model back its own (off)."""
        name = f"interp_{self.base}"
        if on:
            _route(name, self.base, True)
            seen = set()
            for sub in lm.hf_model.modules():
                cfg = getattr(sub, "config", None)
                if cfg is not None and id(cfg) not in seen and getattr(cfg, "_attn_implementation", None) == self.base:
                    seen.add(id(cfg))
                    self._restore.append((cfg, self.base))
                    cfg._attn_implementation = name
            return
        for cfg, old in self._restore:
            cfg._attn_implementation = old
        self._restore = []
        _route(name, self.base, False)

    def _track(self, lm: Model, remove: Callable[[], None]) -> _Handle:
        """A handle that removes a listener and switches routing off with the last one."""
        if self._attached == 0:
            self._switch(lm, True)
        self._attached += 1

        def done() -> None:
            remove()
            self._attached -= 1
            if self._attached == 0:
                self._switch(lm, False)

        return _Handle(done)

    def forward(self, lm: Model, input_ids, attention_mask=None):
        out = lm.hf_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits

    def attach(self, lm: Model, site: str, layer: int, fn: Listener) -> _Handle:
        """Attach a listener at (site, layer); returns a handle that removes it."""
        if site in ("q", "k", "v"):
            lst = self.attention(lm, layer)._interp[site]
            lst.append(fn)
            return self._track(lm, lambda: lst.remove(fn))
        block = self.layers(lm)[layer]
        arch = lm.arch
        if site == "z":
            proj = getattr(getattr(block, self.layout.attn), self.layout.o_proj)

            def pre(mod, args):
                x = args[0]
                b, t, _ = x.shape
                z = x.view(b, t, arch.n_heads, arch.d_head).transpose(1, 2)
                new = run_listeners([fn], z)
                if new is z:
                    return None
                return (new.transpose(1, 2).reshape(b, t, -1), *args[1:])

            return _Handle(proj.register_forward_pre_hook(pre).remove)
        if site == "resid_pre":

            def pre_layer(mod, args, kwargs):
                if args:
                    x = args[0]
                    new = run_listeners([fn], x)
                    return None if new is x else ((new, *args[1:]), kwargs)
                x = kwargs["hidden_states"]
                new = run_listeners([fn], x)
                return None if new is x else (args, {**kwargs, "hidden_states": new})

            return _Handle(block.register_forward_pre_hook(pre_layer, with_kwargs=True).remove)
        module = {
            "resid_post": block,
            "attn_out": getattr(block, self.layout.attn),
            "mlp_out": getattr(block, self.layout.mlp),
        }.get(site)
        if module is None:
            raise InterpError(f"unknown site '{site}': use one of {', '.join(SITES)}")

        def post(mod, args, output):
            x = output[0] if isinstance(output, tuple) else output
            new = run_listeners([fn], x)
            if new is x:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return _Handle(module.register_forward_hook(post).remove)

    def start_at(self, lm: Model, layer: int, resid: torch.Tensor) -> _Handle:
        """Skip layers ``< layer``: they pass their input through, and ``layer`` receives ``resid``.

        For runs whose edits all sit at ``layer`` or above: the layers below compute the same
        values in every such run, so their output (``resid``, the residual stream entering
        ``layer``, [batch, pos, d_model]) can be taken from one earlier run. Every decoder layer
        of the supported families takes the hidden states first and returns them as a tensor.
        """
        blocks = self.layers(lm)

        def passthrough(*args, **kwargs):
            return args[0] if args else kwargs["hidden_states"]

        def enter(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            if x.shape != resid.shape:
                raise InterpError(f"start_at: layer {layer} gets {tuple(x.shape)} but resid is {tuple(resid.shape)}")
            new = resid.to(dtype=x.dtype, device=x.device)
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        for block in blocks[:layer]:
            block.forward = passthrough  # instance attribute: shadows the class's forward
        handle = blocks[layer].register_forward_pre_hook(enter, with_kwargs=True, prepend=True)

        def remove() -> None:
            handle.remove()
            for block in blocks[:layer]:
                del block.forward

        return _Handle(remove)

    def attach_key_bias(self, lm: Model, layer: int, fn) -> _Handle:
        """Attach a key-bias edit: ``fn(q, k, scale) -> (q_extra [b,h,t,1], k_extra [b,kv,s,1])``."""
        lst = self.attention(lm, layer)._interp["bias"]
        lst.append(fn)
        return self._track(lm, lambda: lst.remove(fn))

    def attach_window(self, lm: Model, layer: int, head: int, window: int, sinks: int) -> _Handle:
        """Attach a per-head window edit (`interp.hooks.window_attention`): ``head`` of ``layer`` sees
        only its first ``sinks`` real keys and its last ``window`` keys."""
        lst = self.attention(lm, layer)._interp["window"]
        entry = (head, window, sinks)
        lst.append(entry)
        return self._track(lm, lambda: lst.remove(entry))

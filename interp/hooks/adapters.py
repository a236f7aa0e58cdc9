"""The table of model adapters: the only place that knows model internals.

An adapter maps the canonical sites of `interp.hooks.sites` onto one model family:

- ``HFAdapter`` wraps a real ``transformers`` model. q, k and v are reached through a
  registered attention function (``AttentionInterface``) that receives post-RoPE q and the
  pre-repeat GQA k and v, runs the listeners, then calls the model's own implementation (SDPA by
  default): the model is never switched to eager attention and no [T, T] tensor is built.
  z, the residual stream and block outputs are reached with ordinary module hooks.
- ``TLAdapter`` reads the hook points of a transformer-lens ``TransformerBridge``.

Each family differs only in module paths, which live in ``_HF_LAYOUTS``; adding a family is one
row there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from interp.errors import InterpError
from interp.hooks.sites import SITES, Listener, run_listeners

__all__ = ["adapter_for", "HFAdapter", "TLAdapter", "SUPPORTED_MODEL_TYPES"]


@dataclass(frozen=True)
class _HFLayout:
    layers: str  # dotted path from the CausalLM to the list of decoder layers
    attn: str  # attribute of a decoder layer holding the attention module
    o_proj: str  # attribute of the attention module holding the output projection
    mlp: str  # attribute of a decoder layer holding the MLP


_LLAMA_LIKE = _HFLayout(layers="model.layers", attn="self_attn", o_proj="o_proj", mlp="mlp")
_HF_LAYOUTS: dict[str, _HFLayout] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi3": _HFLayout(layers="model.layers", attn="self_attn", o_proj="o_proj", mlp="mlp"),
    "gpt2": _HFLayout(layers="transformer.h", attn="attn", o_proj="c_proj", mlp="mlp"),
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_HF_LAYOUTS))


def adapter_for(model_type: str, backend: str = "hf"):
    """The adapter for a HF ``model_type`` and backend, or a clear error if there is none."""
    if model_type not in _HF_LAYOUTS:
        raise InterpError(
            f"no hook adapter for model type '{model_type}': supported are {', '.join(SUPPORTED_MODEL_TYPES)}. "
            "Add a row to interp/hooks/adapters.py:_HF_LAYOUTS if the family uses the same module layout"
        )
    if backend == "tl":
        return TLAdapter()
    return HFAdapter(_HF_LAYOUTS[model_type])


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


class _Handle:
    """Removes one listener (and any torch hook handles) when ``remove()`` is called."""

    def __init__(self, remove: Callable[[], None]):
        self._remove = remove

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None


# --------------------------------------------------------------------------------------------
# HuggingFace
# --------------------------------------------------------------------------------------------

_REGISTERED: set[str] = set()


def _interp_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention function registered as ``interp_<base>``: listeners on q/k/v, then the base.

    ``query`` is [batch, head, pos, d_head] after RoPE, ``key``/``value`` are
    [batch, kv_head, key_pos, d_head] before the GQA repeat (and after any KV-cache update).
    Key-bias edits append one extra dimension to q and k per edit (q gets ``bias/scale`` on the
    edited head, k an indicator of the biased keys), which adds ``bias`` to those scores inside
    the fused kernel without building a [T, T] mask.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    state = getattr(module, "_interp", None)
    if state is not None:
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
    base = ALL_ATTENTION_FUNCTIONS[module._interp_base]
    return base(module, query, key, value, attention_mask, **kwargs)


def _register_attention(base: str) -> str:
    """Register ``interp_<base>`` (attention and mask functions) once per process."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = f"interp_{base}"
    if name not in _REGISTERED:
        AttentionInterface.register(name, _interp_attention)
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(base)
        if mask_fn is not None:
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask_fn)
        _REGISTERED.add(name)
    return name


class HFAdapter:
    """Hooks for a HuggingFace causal LM (see module docstring)."""

    backend = "hf"

    def __init__(self, layout: _HFLayout):
        self.layout = layout

    def layers(self, lm) -> list:
        return list(_get(lm.hf_model, self.layout.layers))

    def attention(self, lm, layer: int):
        return getattr(self.layers(lm)[layer], self.layout.attn)

    def install(self, lm) -> None:
        """Route attention through ``interp_<base>`` and give each attention module its registry."""
        model = lm.hf_model
        base = model.config._attn_implementation or "sdpa"
        if base.startswith("interp_"):
            base = base[len("interp_"):]
        if base == "eager":
            # Eager is kept if the user asked for it; SDPA-capable models should load with "sdpa".
            pass
        name = _register_attention(base)
        for i, layer in enumerate(self.layers(lm)):
            attn = getattr(layer, self.layout.attn)
            attn._interp_base = base
            attn._interp = {"q": [], "k": [], "v": [], "bias": []}
            attn._interp_layer = i
        model.config._attn_implementation = name
        for sub in model.modules():
            cfg = getattr(sub, "config", None)
            if cfg is not None and getattr(cfg, "_attn_implementation", None) == base:
                cfg._attn_implementation = name

    def forward(self, lm, input_ids, attention_mask=None):
        out = lm.hf_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits

    def attach(self, lm, site: str, layer: int, fn: Listener) -> _Handle:
        """Attach a listener at (site, layer); returns a handle that removes it."""
        if site in ("q", "k", "v"):
            lst = self.attention(lm, layer)._interp[site]
            lst.append(fn)
            return _Handle(lambda: lst.remove(fn))
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
        module = {"resid_post": block, "attn_out": getattr(block, self.layout.attn), "mlp_out": getattr(block, self.layout.mlp)}.get(site)
        if module is None:
            raise InterpError(f"unknown site '{site}': use one of {', '.join(SITES)}")

        def post(mod, args, output):
            x = output[0] if isinstance(output, tuple) else output
            new = run_listeners([fn], x)
            if new is x:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return _Handle(module.register_forward_hook(post).remove)

    def attach_key_bias(self, lm, layer: int, fn) -> _Handle:
        """Attach a key-bias edit: ``fn(q, k, scale) -> (q_extra [b,h,t,1], k_extra [b,kv,s,1])``."""
        lst = self.attention(lm, layer)._interp["bias"]
        lst.append(fn)
        return _Handle(lambda: lst.remove(fn))


# --------------------------------------------------------------------------------------------
# TransformerLens bridge
# --------------------------------------------------------------------------------------------

# site -> (hook name pattern, layout of the hook's tensor)
_TL_HOOKS = {
    "q": ("blocks.{L}.attn.hook_rot_q", "bthd"),
    "k": ("blocks.{L}.attn.hook_rot_k", "bthd"),
    "v": ("blocks.{L}.attn.hook_v", "bthd"),
    "z": ("blocks.{L}.attn.hook_z", "bthd"),
    "resid_pre": ("blocks.{L}.hook_resid_pre", "btd"),
    "resid_post": ("blocks.{L}.hook_resid_post", "btd"),
    "attn_out": ("blocks.{L}.hook_attn_out", "btd"),
    "mlp_out": ("blocks.{L}.hook_mlp_out", "btd"),
}


class TLAdapter:
    """Hooks for a transformer-lens ``TransformerBridge`` (which runs eager attention)."""

    backend = "tl"

    def install(self, lm) -> None:
        missing = [n.format(L=0) for n, _ in _TL_HOOKS.values() if n.format(L=0) not in lm.model.hook_dict]
        if missing:
            raise InterpError(f"this TransformerBridge lacks hook points {missing}: it cannot be used with backend='tl'")

    def forward(self, lm, input_ids, attention_mask=None):
        if attention_mask is not None:
            return lm.model(input_ids, attention_mask=attention_mask)
        return lm.model(input_ids)

    def _hook_point(self, lm, name: str):
        return lm.model.hook_dict[name]

    def attach(self, lm, site: str, layer: int, fn: Listener) -> _Handle:
        if site not in _TL_HOOKS:
            raise InterpError(f"unknown site '{site}': use one of {', '.join(SITES)}")
        pattern, layout = _TL_HOOKS[site]

        def hook(x, hook):
            if layout == "bthd":
                canon = x.transpose(1, 2)
                new = run_listeners([fn], canon)
                return None if new is canon else new.transpose(1, 2)
            new = run_listeners([fn], x)
            return None if new is x else new

        handle = self._hook_point(lm, pattern.format(L=layer)).add_hook(hook)
        return _Handle(handle.hook.remove)

    def attach_key_bias(self, lm, layer: int, fn) -> _Handle:
        """Key bias on the bridge: add the bias to the eager scores [batch, head, q, k] directly."""
        state: dict[str, torch.Tensor] = {}

        def grab_q(x, hook):
            state["q"] = x.transpose(1, 2)

        def grab_k(x, hook):
            state["k"] = x.transpose(1, 2)

        def add_bias(scores, hook):
            qc, kc = fn(state["q"], state["k"], 1.0)  # with scale 1, q_extra * k_extra is the bias
            group = qc.shape[1] // kc.shape[1]
            kc = kc.repeat_interleave(group, dim=1)
            return scores + qc @ kc.transpose(-1, -2)

        names = [f"blocks.{layer}.attn.hook_rot_q", f"blocks.{layer}.attn.hook_rot_k", f"blocks.{layer}.attn.hook_attn_scores"]
        handles = [self._hook_point(lm, n).add_hook(h) for n, h in zip(names, (grab_q, grab_k, add_bias))]
        return _Handle(lambda: [h.hook.remove() for h in handles])

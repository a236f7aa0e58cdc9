"""Hooks for a transformer-lens ``TransformerBridge`` (see `interp.hooks.adapters`)."""

from __future__ import annotations

import torch

from interp.errors import InterpError
from interp.hooks.families import (
    LayerAttention,
    _get,
    _HFLayout,
    head_output_weights,
    output_projection,
    read_layer_attention,
)
from interp.hooks.sites import SITES, Listener, _Handle, run_listeners
from interp.protocols import Adapter, Model

__all__ = ["TLAdapter"]


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


class TLAdapter(Adapter):
    """Hooks for a transformer-lens ``TransformerBridge`` (which runs eager attention).

    The per-layer softmax settings and sink logits are read from the HF modules the bridge
    wraps, exactly as for `HFAdapter`.
    """

    backend = "tl"

    def __init__(self, layout: _HFLayout):
        self.layout = layout

    def layer_attention(self, model) -> tuple[LayerAttention, ...]:
        return read_layer_attention(model, self.layout)

    def sink_logits(self, lm: Model, layer: int) -> torch.Tensor | None:
        attn = getattr(list(_get(lm.hf_model, self.layout.layers))[layer], self.layout.attn)
        sinks = getattr(attn, "sinks", None)
        return sinks.detach().float() if isinstance(sinks, torch.Tensor) else None

    def head_output_weights(self, lm: Model, layer: int) -> torch.Tensor:
        """W_O per head of ``layer``, [head, d_head, d_model], read from the HF module the bridge wraps
        (the bridge replaces o_proj by a wrapper that keeps it as ``original_component``)."""
        proj = output_projection(lm.hf_model, self.layout, layer)
        proj = getattr(proj, "original_component", None) or proj
        return head_output_weights(proj, layer, lm.arch.n_heads, lm.arch.d_head)

    def install(self, lm: Model) -> None:
        """Pick the bridge's hook points; models without rotary embeddings (GPT-2) have no
        ``hook_rot_q``/``hook_rot_k``, and their plain q/k hooks are then the post-RoPE q/k."""
        hooks = dict(_TL_HOOKS)
        if "blocks.0.attn.hook_rot_q" not in lm.model.hook_dict:
            hooks["q"] = ("blocks.{L}.attn.hook_q", "bthd")
            hooks["k"] = ("blocks.{L}.attn.hook_k", "bthd")
        missing = [n.format(L=0) for n, _ in hooks.values() if n.format(L=0) not in lm.model.hook_dict]
        if missing:
            raise InterpError(
                f"this TransformerBridge lacks hook points {missing}: it cannot be used with backend='tl'"
            )
        self.hooks = hooks

    def forward(self, lm: Model, input_ids, attention_mask=None):
        if attention_mask is not None:
            return lm.model(input_ids, attention_mask=attention_mask)
        return lm.model(input_ids)

    def _hook_point(self, lm: Model, name: str):
        return lm.model.hook_dict[name]

    def attach(self, lm: Model, site: str, layer: int, fn: Listener) -> _Handle:
        if site not in self.hooks:
            raise InterpError(f"unknown site '{site}': use one of {', '.join(SITES)}")
        pattern, layout = self.hooks[site]

        def hook(x, hook):
            if layout == "bthd":
                canon = x.transpose(1, 2)
                new = run_listeners([fn], canon)
                return None if new is canon else new.transpose(1, 2)
            new = run_listeners([fn], x)
            return None if new is x else new

        handle = self._hook_point(lm, pattern.format(L=layer)).add_hook(hook)
        return _Handle(handle.hook.remove)

    def attach_key_bias(self, lm: Model, layer: int, fn) -> _Handle:
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

        names = [
            self.hooks["q"][0].format(L=layer),
            self.hooks["k"][0].format(L=layer),
            f"blocks.{layer}.attn.hook_attn_scores",
        ]
        handles = [self._hook_point(lm, n).add_hook(h) for n, h in zip(names, (grab_q, grab_k, add_bias))]
        return _Handle(lambda: [h.hook.remove() for h in handles])

    def attach_window(self, lm: Model, layer: int, head: int, window: int, sinks: int) -> _Handle:
        """Per-head window on the bridge: mask the eager scores [batch, head, q, k] of ``head`` outside
        its first ``sinks`` keys and last ``window`` keys (positions from 0: the bridge is not padded)."""
        from interp.hooks._window_heads import window_keep

        def restrict(scores, hook):
            keep = window_keep(scores.shape[-2], scores.shape[-1], window, sinks).to(scores.device)
            scores = scores.clone()
            scores[:, head] = scores[:, head].masked_fill(~keep, float("-inf"))
            return scores

        handle = self._hook_point(lm, f"blocks.{layer}.attn.hook_attn_scores").add_hook(restrict)
        return _Handle(handle.hook.remove)

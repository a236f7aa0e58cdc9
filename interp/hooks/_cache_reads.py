"""What a `interp.hooks.Cache` answers beyond its stored tensors: patterns, statistics, TL names.

A cache remembers the model it was captured from and the padding mask of its latest forward
pass, so each read below uses the layer's own softmax settings (`LoadedModel.attention_kwargs`:
scale, sliding window, soft-cap, learned sinks), the model's GQA mapping and the padding; none
of them can be forgotten by the caller:

- ``cache.pattern(layer, head=None)``: A from the captured q and k through
  `interp.kernels.attention_pattern`, only for the asked heads;
- ``cache.stats(layer, **kwargs)``: `interp.kernels.attention_stats` of the layer;
- ``cache["blocks.5.attn.hook_z"]``: TransformerLens hook names, answered in TransformerLens's
  layout (q, k, v, z as [batch, pos, head, d_head]; the tuple keys ``cache["z", 5]`` keep
  interp's [batch, head, pos, d_head], see `interp.hooks.sites`).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError

__all__ = ["CacheReads", "TL_NAMES"]

# TransformerLens hook name (after "blocks.L.") -> (interp site, whether q/k/v/z axes are swapped to TL's)
TL_NAMES = {
    "attn.hook_rot_q": ("q", True),
    "attn.hook_rot_k": ("k", True),
    "attn.hook_q": ("q", True),  # TL's hook_q is pre-RoPE: refused on rotary models (see _tl_site)
    "attn.hook_k": ("k", True),
    "attn.hook_v": ("v", True),
    "attn.hook_z": ("z", True),
    "attn.hook_pattern": ("pattern", False),
    "hook_resid_pre": ("resid_pre", False),
    "hook_resid_post": ("resid_post", False),
    "hook_attn_out": ("attn_out", False),
    "hook_mlp_out": ("mlp_out", False),
}
_NAME = re.compile(r"blocks\.(\d+)\.(.+)")
_LISTED = {"q": "attn.hook_rot_q", "k": "attn.hook_rot_k", "v": "attn.hook_v", "z": "attn.hook_z"} | {
    site: f"hook_{site}" for site in ("resid_pre", "resid_post", "attn_out", "mlp_out")
}


def _span(layers: list[int]) -> str:
    """``0-29`` for a run of layers, else the list."""
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return str(layers)


def _rotary(lm: Any) -> bool:
    """Whether the model rotates q and k (RoPE): then TL's hook_q/hook_k are not interp's q/k."""
    config = getattr(lm.hf_model.config, "text_config", None) or lm.hf_model.config
    return any(
        getattr(config, name, None) is not None
        for name in ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim", "rotary_pct")
    )


class CacheReads:
    """Reads shared by every `Cache` (mixed in; the stored tensors live in the cache itself)."""

    lm: Any
    layers: list[int]
    keep: tuple[str, ...]
    attention_mask: Optional[Tensor]

    def keys(self) -> list[str]:
        """TransformerLens names of what the cache holds (``hook_rot_q``/``hook_rot_k`` for interp's
        post-RoPE q/k; ``hook_pattern`` where q and k were kept). Tuple keys work too: ``(site, layer)``."""
        store = self._store  # type: ignore[attr-defined]
        names = []
        for layer in self.layers:
            names += [f"blocks.{layer}.{_LISTED[s]}" for s in self.keep if s in _LISTED and (s, layer) in store]
            if ("q", layer) in store and ("k", layer) in store:
                names.append(f"blocks.{layer}.attn.hook_pattern")
        return names

    def __iter__(self) -> Iterator[str]:
        """The names of `keys`, as iterating a TransformerLens ActivationCache gives."""
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def items(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) for each of `keys`, in TransformerLens's layout; patterns computed as reached."""
        return ((name, self[name]) for name in self.keys())  # type: ignore[index]

    def __repr__(self) -> str:
        ids = getattr(self, "input_ids", None)
        shape = f"batch {ids.shape[0]} x {ids.shape[1]} positions" if ids is not None else "no input ids"
        padded = ", padded" if self.attention_mask is not None else ""
        return (
            f"Cache(layers {_span(self.layers)}, sites {', '.join(self.keep)}: {shape}{padded}; {len(self)} TL names)"
        )

    def _check_captured(self, layer: int, what: str) -> None:
        """Raise unless ``layer`` was captured (out of the model's range: the model's own message)."""
        if layer in self.layers:
            return
        if self.lm is not None:
            self.lm.arch.check_layer(layer)
        raise InterpError(
            f"{what}layer {layer} was not captured (captured: {_span(self.layers)}): pass layers=[..., {layer}] "
            "to run_with_cache (or capture)"
        )

    def _model(self) -> Any:
        if self.lm is None:
            raise InterpError("this cache does not know its model: make it with interp.hooks.capture(lm, ...)")
        return self.lm

    def _tl_site(self, name: str) -> tuple[str, int, bool]:
        """(site, layer, TL layout) of a TransformerLens hook name such as ``blocks.5.attn.hook_z``."""
        found = _NAME.fullmatch(name)
        if found is None or found.group(2) not in TL_NAMES:
            raise InterpError(
                f"unknown cache key {name!r}: use cache[site, layer] (sites {', '.join(self.keep)}) or a "
                "TransformerLens name blocks.L.attn.hook_{q,k,v,z,rot_q,rot_k,pattern} / "
                "blocks.L.hook_{resid_pre,resid_post,attn_out,mlp_out}"
            )
        layer = int(found.group(1))
        site, swap = TL_NAMES[found.group(2)]
        if found.group(2) in ("attn.hook_q", "attn.hook_k") and _rotary(self._model()):
            rot = found.group(2).replace("hook_", "hook_rot_")
            raise InterpError(
                f"{name} is TransformerLens's q/k before RoPE, which interp does not capture; the post-RoPE "
                f"q/k the attention uses is cache['blocks.{layer}.{rot}'] (TL layout) or cache['{site}', {layer}]"
            )
        return site, layer, swap

    def _named(self, name: str) -> Tensor:
        """The tensor of a TransformerLens hook name, in TransformerLens's layout."""
        site, layer, swap = self._tl_site(name)
        if site == "pattern":
            return self.pattern(layer)
        x = self[site, layer]
        return x.transpose(1, 2) if swap else x

    def _padding(self, layer: int, key_pos: int) -> Optional[Tensor]:
        """The forward's [batch, key_pos] padding mask (True = real token), or None when unpadded."""
        mask = self.attention_mask
        if mask is None:
            return None
        if mask.ndim != 2 or mask.shape[-1] != key_pos:
            raise InterpError(
                f"the forward's attention_mask {tuple(mask.shape)} is not a [batch, key_pos={key_pos}] padding "
                f"mask for layer {layer}'s keys: pass a 2-d HF attention_mask (1 = real token)"
            )
        return mask.to(torch.bool)

    def _qk(self, layer: int, what: str) -> tuple[Tensor, Tensor]:
        self._check_captured(layer, f"{what}: ")
        missing = [s for s in ("q", "k") if s not in self.keep]
        if missing:
            raise InterpError(
                f"{what} needs q and k of layer {layer}, but this cache did not keep {' and '.join(missing)}: "
                "capture with sites=(..., 'q', 'k') (keep= for interp.hooks.capture)"
            )
        return self["q", layer], self["k", layer]

    def pattern(self, layer: int, head: Optional[int] = None) -> Float[Tensor, "batch *heads query_pos key_pos"]:
        """Post-softmax attention of ``layer`` (TransformerLens's ``hook_pattern``), from the captured q and k.

        Uses the layer's own scale, causal and sliding-window masks, soft-cap and learned sinks
        (`LoadedModel.attention_kwargs`), the model's GQA mapping, and the forward pass's padding
        mask (padded keys get 0, padded query rows are 0). Computed by
        `interp.kernels.attention_pattern` in float64 for the asked heads only.

        Args:
            layer: a captured layer.
            head: one query head, or None for every head.

        Returns:
            A [batch, query_pos, key_pos] for one head, [batch, head, query_pos, key_pos] for
            all; float32 (float64 when q is float64). Rows sum to 1 over the keys a query sees.

        Raises:
            InterpError: layer not captured, q or k not kept, head out of range.
        """
        from interp.kernels import attention_pattern

        q, k = self._qk(layer, "pattern")
        lm = self._model()
        settings = lm.attention_kwargs(layer)
        if head is not None:
            lm.arch.check_head(head)
            kv = lm.arch.kv_map[head]
            q, k = q[:, head : head + 1], k[:, kv : kv + 1]
            if settings.get("sink_logits") is not None:
                settings["sink_logits"] = settings["sink_logits"][head : head + 1]
        a = attention_pattern(q, k, **settings, key_padding_mask=self._padding(layer, k.shape[2]))
        a = a if q.dtype == torch.float64 else a.float()
        return a[:, 0] if head is not None else a

    def stats(self, layer: int, **kwargs: Any):
        """`interp.kernels.attention_stats` of ``layer`` from the captured q and k, with the layer's own
        kwargs (`LoadedModel.attention_kwargs`) and the forward's padding mask applied.

        Args:
            layer: a captured layer.
            **kwargs: further `attention_stats` arguments (sink_tokens, query_rows, targets, ...);
                they override the layer's settings. ``key_padding_mask`` is refused: the cache
                applies the forward's own.

        Returns:
            `interp.kernels.AttentionStats`.

        Raises:
            InterpError: layer not captured, q or k not kept, or anything `attention_stats` refuses.
        """
        from interp.kernels import attention_stats

        if "key_padding_mask" in kwargs:
            raise InterpError(
                "cache.stats applies the forward's own padding mask: drop key_padding_mask "
                "(call interp.kernels.attention_stats directly for another mask)"
            )
        q, k = self._qk(layer, "stats")
        settings = {**self._model().attention_kwargs(layer), **kwargs}
        return attention_stats(q, k, key_padding_mask=self._padding(layer, k.shape[2]), **settings)

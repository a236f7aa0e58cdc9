"""Run a forward pass and hand each analysed layer's q and k to a callback, stopping after the last.

Shared by the head experiments (`heads`, `select_copy`, `qr_heads`): they need per-layer
attention statistics only, so the rest of the forward pass after the last analysed layer (later
MLPs, the [T, vocab] logits) is skipped by raising a private exception from the callback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.models import Model

__all__ = ["stream_layers"]


class _Done(Exception):
    """Raised by the callback after the last analysed layer."""


def stream_layers(
    lm: Model,
    input_ids: Int[Tensor, "batch pos"],
    layers: Sequence[int],
    on_layer: Callable[[int, Tensor, Tensor], None],
    attention_mask: Optional[Int[Tensor, "batch pos"]] = None,
    full: bool = False,
) -> Optional[Float[Tensor, "batch pos vocab"]]:
    """Call ``on_layer(layer, q, k)`` for every layer of ``layers`` during one forward pass.

    Args:
        lm: the model.
        input_ids: [batch, pos] token ids.
        layers: the layers to analyse (already checked with `interp.hooks.check_layers`).
        on_layer: gets post-RoPE q [batch, head, pos, d_head] and k [batch, kv_head, pos, d_head].
        attention_mask: [batch, pos] HF attention mask (1 = real token), or None.
        full: run the whole forward pass and return its logits [batch, pos, vocab].

    Returns:
        The logits with ``full``, else None.

    Raises:
        InterpError: when a layer's hook never fired.
    """
    from interp.hooks import capture

    seen: set[int] = set()
    last = max(layers)

    def hook(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        on_layer(layer, q, k)
        seen.add(layer)
        if layer == last and not full:
            raise _Done

    logits = None
    try:
        with capture(lm, layers=list(layers), keep=(), on_layer=hook):
            logits = lm.forward(input_ids, attention_mask)
    except _Done:
        pass
    missing = sorted(set(layers) - seen)
    if missing:
        raise InterpError(f"no attention statistics for layers {missing}: the hooks did not fire on this model")
    return logits if full else None

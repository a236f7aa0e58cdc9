"""Sites: the named places of the canonical view, and the listener registry adapters share.

A *site* is one tensor of one layer seen in a fixed layout, whatever the model family:

===========  =====================================  ==========================================
site         canonical shape                        meaning
===========  =====================================  ==========================================
q            [batch, head, pos, d_head]             post-RoPE queries (what the scores use)
k, v         [batch, kv_head, pos, d_head]          post-RoPE keys / values, before GQA repeat
z            [batch, head, pos, d_head]             per-head output, before the output proj.
resid_pre    [batch, pos, d_model]                  residual stream entering the layer
resid_post   [batch, pos, d_model]                  residual stream leaving the layer
attn_out     [batch, pos, d_model]                  attention block output (after o_proj)
mlp_out      [batch, pos, d_model]                  MLP block output
===========  =====================================  ==========================================

Captures and edits are both *listeners*: ``fn(tensor) -> tensor | None`` attached to a
(site, layer). A listener returning a tensor replaces the site's value; returning None leaves it.
Adapters call listeners in the order they were attached.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["SITES", "HEAD_SITES", "KV_SITES", "Listener", "run_listeners"]

SITES = ("q", "k", "v", "z", "resid_pre", "resid_post", "attn_out", "mlp_out")
HEAD_SITES = ("q", "z")
KV_SITES = ("k", "v")

Listener = Callable[[torch.Tensor], Optional[torch.Tensor]]


def run_listeners(listeners: list[Listener], x: torch.Tensor) -> torch.Tensor:
    """Pass ``x`` through each listener in turn; a listener may replace it."""
    for fn in list(listeners):
        out = fn(x)
        if out is not None:
            if out.shape != x.shape:
                from interp.errors import InterpError

                raise InterpError(
                    f"an edit returned shape {tuple(out.shape)} where the site has shape {tuple(x.shape)}"
                )
            x = out
    return x


class _Handle:
    """Removes one listener (and any torch hook handles) when ``remove()`` is called."""

    def __init__(self, remove: Callable[[], None]):
        self._remove = remove

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

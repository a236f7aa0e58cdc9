"""Per-head StreamingLLM windows inside the model's own attention call (`interp.hooks.window_attention`).

A windowed head h keeps, for query i, the keys j with ``j < first_real + sinks`` or
``i - j < window``, intersected with the model's own mask (causal, its sliding window, padding).
The layer's attention runs as usual for every head; then, per block of ``_BLOCK`` queries, the
model's own attention function runs once more over only the key columns a windowed head of the
block may see (the sink keys and the last ``window + block`` positions) with that restricted
mask, and the windowed heads' outputs are replaced. Extra cost per layer and distinct (window,
sinks): O(T (window + block + sinks)) scores per head; no [T, T] tensor is built unless the model
passed one itself.

The restricted call goes through the model's function on eager (float additive mask) and SDPA
(boolean mask); on flash and flex attention, whose masks are not explicit tensors, through the
family's own ``eager_attention_forward`` (same scale, soft-cap and sink logits).
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

import torch

from interp.errors import InterpError

__all__ = ["apply_windows"]

_BLOCK = 512  # queries per restricted call


def _allowed(mask, spec, rows: torch.Tensor, cols: torch.Tensor, batch: int, tq: int, tk: int) -> torch.Tensor:
    """The model's own mask [batch, n_rows, n_cols] (True = may attend) at absolute query rows ``rows``
    (indices into the layer's queries) and key columns ``cols``."""
    pos = (tk - tq + rows)[:, None]  # absolute position of each query row (end-aligned, as with a KV cache)
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        sub = mask[:, 0, rows][:, :, cols]
        if sub.dtype != torch.bool:
            sub = sub > torch.finfo(sub.dtype).min / 2  # additive mask: 0 = keep, the dtype's minimum = masked
        return sub.expand(batch, -1, -1)
    keep = cols[None, :] <= pos
    if spec is not None and spec.sliding_window is not None:
        keep = keep & (pos - cols[None, :] < spec.sliding_window)
    keep = keep[None].expand(batch, -1, -1)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:  # flash attention's [batch, key_pos] padding mask
        keep = keep & mask[:, cols].bool()[:, None, :]
    elif mask is not None and not isinstance(mask, torch.Tensor):
        raise InterpError(
            f"window_attention cannot read a {type(mask).__name__} attention mask: load the model with "
            "attn_implementation='sdpa' or 'eager'"
        )
    return keep


def _first_real(mask, batch: int, tk: int, device) -> torch.Tensor:
    """[batch] index of the first real key (0 without padding)."""
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        seen = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
        seen = seen.expand(batch, -1, -1, -1).any(dim=1).any(dim=1)  # [batch, key_pos]
        return seen.to(torch.int64).argmax(dim=-1)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.bool().to(torch.int64).argmax(dim=-1)
    return torch.zeros(batch, dtype=torch.int64, device=device)


def apply_windows(
    base: Callable,
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    out: torch.Tensor,
    edits: Sequence[tuple[int, int, int]],
    kwargs: dict,
) -> torch.Tensor:
    """Replace the windowed heads' rows of ``out`` by their attention over the sinks and the window.

    Args:
        base: the model's attention function (HF ``AttentionInterface`` signature).
        module: the attention module (``_interp_spec``, ``_interp_base``).
        query: [batch, head, query_pos, d_head]; key, value: [batch, kv_head, key_pos, d_head].
        attention_mask: what the model passed its attention function.
        out: the layer's output [batch, query_pos, head, d_head] for every head.
        edits: (head, window, sinks) per windowed head.
        kwargs: the call's other keyword arguments.

    Returns:
        ``out`` with the windowed heads' slices replaced (a new tensor).
    """
    spec = getattr(module, "_interp_spec", None)
    batch, _, tq, _ = query.shape
    tk = key.shape[2]
    device = query.device
    fn, as_float = base, module._interp_base == "eager"
    if module._interp_base not in ("eager", "sdpa"):
        fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
        if fn is None:
            raise InterpError(
                f"window_attention on {module._interp_base} needs the family's eager_attention_forward, which "
                f"{type(module).__name__} lacks: load the model with attn_implementation='sdpa'"
            )
        as_float = True
    first = _first_real(attention_mask, batch, tk, device)
    out = out.clone()
    groups: dict[tuple[int, int], list[int]] = {}
    for head, window, sinks in edits:
        groups.setdefault((window, sinks), []).append(head)
    for (window, sinks), heads in groups.items():
        n_sink = int(first.max()) + sinks
        for start in range(0, tq, _BLOCK):
            stop = min(start + _BLOCK, tq)
            lo = max(0, tk - tq + start - window + 1)
            cols = torch.unique(
                torch.cat(
                    [torch.arange(0, min(n_sink, tk), device=device), torch.arange(lo, tk - tq + stop, device=device)]
                )
            )
            rows = torch.arange(start, stop, device=device)
            pos = (tk - tq + rows)[:, None]
            keep = (pos - cols[None, :] < window)[None] | (cols[None, None, :] < (first[:, None, None] + sinks))
            keep = keep & _allowed(attention_mask, spec, rows, cols, batch, tq, tk)
            empty = ~keep.any(dim=-1)  # padded query rows see no key: they keep the model's own output
            keep = keep | empty[..., None]
            mask = keep[:, None]  # [batch, 1, rows, cols]
            if as_float:
                mask = torch.zeros(mask.shape, dtype=query.dtype, device=device).masked_fill(
                    ~mask, torch.finfo(query.dtype).min
                )
            sub, _ = fn(module, query[:, :, start:stop], key[:, :, cols], value[:, :, cols], mask, **kwargs)
            sub = sub[:, :, heads].to(out.dtype)
            out[:, start:stop, heads] = torch.where(empty[:, :, None, None], out[:, start:stop, heads], sub)
    return out


def check_window(window: int, sinks: int) -> None:
    """Raise unless ``window >= 1`` and ``sinks >= 0`` (ints)."""
    if not isinstance(window, int) or window < 1:
        raise InterpError(f"window_attention needs window >= 1 (keys i - j < window), got {window!r}")
    if not isinstance(sinks, int) or sinks < 0:
        raise InterpError(f"window_attention needs sinks >= 0, got {sinks!r}")


def window_keep(tq: int, tk: int, window: int, sinks: int, first: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[batch or 1, query_pos, key_pos] the per-head window rule alone (for tests and the TL bridge)."""
    pos = torch.arange(tk - tq, tk)[:, None]
    j = torch.arange(tk)[None, :]
    f = torch.zeros(1, dtype=torch.int64) if first is None else first
    return (pos - j < window)[None] | (j[None] < (f[:, None, None] + sinks))

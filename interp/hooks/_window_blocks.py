"""Sliding-window layers in query blocks: the model's own attention, minus the keys no query sees.

On CPU, SDPA with a boolean mask runs a dense kernel: a sliding-window layer (Gemma 3's 15 local
layers of 18, window 512) costs O(T^2) time, converts the [T, T] mask to float on every call
(4 GiB at T = 32k) and repeats the GQA keys, although each query sees only W keys. Measured on
Gemma 3 270M at T = 2048 (one CPU thread): a local layer's SDPA call took 0.76 s, more than a
global layer's (0.49 s, which runs causal without a mask).

`windowed_blocks` calls the model's own attention function once per block of ``_BLOCK`` queries,
with only the key columns that some query of the block may see (read off the model's own mask,
so padding, KV-cache offsets and the window itself are honoured exactly) and the matching slice of
the mask. A column dropped is masked for every query of the block, so each softmax is the same;
only the kernel's summation order can differ (float32 round-off). Cost per local layer becomes
O(T (W + block)) time and O(block (W + block)) extra memory. Global layers, masks that are not
boolean, GPU tensors and short inputs go to the model's function unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["windowed_blocks"]

_BLOCK = 512  # queries per call; with W = 512 a call sees at most W + _BLOCK - 1 keys


def windowed_blocks(base: Callable, module, query, key, value, attention_mask, **kwargs):
    """``base(module, query, key, value, attention_mask, **kwargs)``, run per query block on a
    CPU sliding-window layer with a boolean mask (see module docstring); else called as is.

    Args:
        base: the attention function the model was loaded with (HF ``AttentionInterface`` signature).
        module: the attention module (carries interp's ``_interp_spec`` for the layer).
        query: [batch, head, query_pos, d_head]; key, value: [batch, kv_head, key_pos, d_head].
        attention_mask: the model's mask [batch, 1, query_pos, key_pos] (True = may attend), or None.

    Returns:
        What ``base`` returns: (output [batch, query_pos, head, d_head], None).
    """
    spec = getattr(module, "_interp_spec", None)
    q_len = query.shape[2]
    if (
        spec is None
        or spec.sliding_window is None
        or not isinstance(attention_mask, torch.Tensor)
        or attention_mask.dtype != torch.bool
        or attention_mask.shape[-2] != q_len
        or query.device.type != "cpu"
        or q_len <= 2 * _BLOCK
    ):
        return base(module, query, key, value, attention_mask, **kwargs)
    kv_len = key.shape[2]
    outs = []
    for start in range(0, q_len, _BLOCK):
        stop = min(start + _BLOCK, q_len)
        rows = attention_mask[..., start:stop, :]
        seen = rows.flatten(0, -2).any(dim=0).nonzero()  # key columns some query of the block may see
        lo, hi = (int(seen[0]), int(seen[-1]) + 1) if seen.numel() else (0, kv_len)
        out, _ = base(module, query[:, :, start:stop], key[:, :, lo:hi], value[:, :, lo:hi], rows[..., lo:hi], **kwargs)
        outs.append(out)
    return torch.cat(outs, dim=1), None

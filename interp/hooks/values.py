"""Value norms: how much each key can move a head's output, not only how much attention it gets.

A head's output at query i is ``sum_j a_ij W_O^h v_j`` (plus, once per position, the output
projection's bias, which belongs to no key). Attention weight alone overstates what a key does:
a key with a tiny ``W_O^h v_j`` can take most of the mass and change nothing (Kobayashi et al.
2020, "Attention is Not Only a Weight"; Gu et al. 2024 find first-token sinks with small value
norms). `value_norms` gives, per key, the two sizes that weight attention by what it moves:

- ``value``: ||v_j||, per kv head (the captured v: post-projection, after any v bias or
  v-norm the family applies; under GQA one v serves every query head of its group);
- ``output``: ||W_O^h v_j||, per query head h, with W_O^h the head's slice of the layer's own
  output projection (`interp.hooks.families.head_output_weights`; the adapter reads it).

Soft-caps and learned sink logits change a_ij, never v or W_O, so they do not enter here. What
follows o_proj (Gemma's post-attention RMSNorm) is not part of W_O^h: the norms are those of
the attention block's pre-norm output, the sum the heads write.

||W_O^h v||^2 = v^T (W_O^h W_O^h^T) v is computed through the [d_head, d_head] Gram matrix in
float64, so a long input costs [pos, d_head] per head, never [pos, d_model].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.protocols import Model

__all__ = ["ValueNorms", "value_norms"]


@dataclass(frozen=True)
class ValueNorms:
    """Per-key value sizes of one layer.

    Attributes:
        value: [batch, kv_head, pos] ||v_j||.
        output: [batch, head, pos] ||W_O^h v_j||, what key j can add to head h's output per
            unit of attention; the ``key_weight`` of value-weighted attention statistics.
    """

    value: Float[Tensor, "batch kv_head pos"]
    output: Float[Tensor, "batch head pos"]


def value_norms(
    lm: Model, layer: int, v: Float[Tensor, "batch kv_head pos d_head"], dtype: torch.dtype = torch.float32
) -> ValueNorms:
    """||v_j|| and ||W_O^h v_j|| of ``layer`` from its captured v.

    Args:
        lm: the model (HF or TransformerLens bridge: both read the HF output projection).
        layer: the layer v comes from.
        v: the layer's captured values (`interp.hooks.capture` site ``v``), before the GQA repeat.
        dtype: dtype of the result (computed in float64).

    Returns:
        `ValueNorms` on v's device.

    Raises:
        InterpError: a bad layer, or v not shaped like this layer's values.
    """
    arch = lm.arch
    arch.check_layer(layer)
    if v.shape[1] != arch.n_kv_heads or v.shape[-1] != arch.d_head:
        raise InterpError(
            f"v of shape {tuple(v.shape)} is not layer {layer}'s values: expected [batch, {arch.n_kv_heads} kv heads, "
            f"pos, {arch.d_head}] (pass cap['v', {layer}])"
        )
    w = lm.adapter.head_output_weights(lm, layer).to(device=v.device, dtype=torch.float64)
    gram = w @ w.transpose(-1, -2)  # [head, d_head, d_head]
    v64 = v.detach().to(torch.float64)
    out = torch.empty(v.shape[0], arch.n_heads, v.shape[2], dtype=torch.float64, device=v.device)
    for h, kv in enumerate(arch.kv_map):
        x = v64[:, kv]  # [batch, pos, d_head]
        out[:, h] = ((x @ gram[h]) * x).sum(-1).clamp_min(0.0).sqrt()
    return ValueNorms(value=v64.norm(dim=-1).to(dtype), output=out.to(dtype))

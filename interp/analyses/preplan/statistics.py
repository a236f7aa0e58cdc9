"""The kernel's statistics of one layer: dist, waad and band of the response, from captured q and k.

`layer_statistics` runs `interp.kernels.attention_stats` on one layer's post-RoPE q and k (as
`interp.hooks.stream_layers` hands them over): row statistics dist and waad on the response
rows, the band column statistic on the response keys. Only [head, resp] numbers are kept, so
memory is linear in T; no [T, T] attention is built. `PreplanStats` stacks them over the
chosen layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyses.preplan.config import PreplanConfig

__all__ = ["PreplanStats", "layer_statistics"]


@dataclass(frozen=True, eq=False)
class PreplanStats:
    """Kernel statistics kept from the forward pass (all float64 numpy).

    Attributes:
        layers: the chosen layers.
        dist: [layer, head, resp] dist_t of each response row.
        waad: [layer, head, resp] waad_t(W) of each response row.
        band: [layer, head, resp] band_s(lo, hi) of each response key (NaN without band queries).
    """

    layers: tuple[int, ...]
    dist: np.ndarray
    waad: np.ndarray
    band: np.ndarray


def layer_statistics(
    q: Float[Tensor, "1 head pos d_head"],
    k: Float[Tensor, "1 kv_head pos d_head"],
    *,
    attention: dict,
    n_prompt: int,
    config: PreplanConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dist, waad and band of one layer from its q and k, via `interp.kernels.attention_stats`.

    Args:
        q: [1, head, pos, d_head] post-RoPE queries of prompt + response.
        k: [1, kv_head, pos, d_head] post-RoPE keys (not repeated).
        attention: the layer's softmax settings, ``lm.attention_kwargs(layer)`` (scale, causal,
            sliding window, soft-cap, sink logits).
        n_prompt: prompt length P; the response is positions P .. pos-1.
        config: window, band, backend.

    Returns:
        (dist, waad, band), each [head, resp] float64: row statistics of the response rows and
        the band column statistic of the response keys.
    """
    from interp.kernels import attention_stats

    pos = q.shape[2]
    rows = torch.arange(n_prompt, pos, device=q.device)
    st = attention_stats(
        q,
        k,
        **attention,
        window=config.window,
        band=config.band,
        query_rows=rows,
        columns=True,
        backend=config.backend,
        chunk_size=config.chunk_size,
    )
    as_np = lambda t: t[0].detach().to(torch.float64).cpu().numpy()  # noqa: E731
    return as_np(st.dist), as_np(st.waad), as_np(st.band[:, :, n_prompt:])

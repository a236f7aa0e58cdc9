"""The attention pattern itself: A = softmax over the keys a query may see, as the kernel defines it.

`attention_pattern` is the one place outside the statistics where A is built. It takes the same
arguments as `interp.kernels.attention_stats` (``**lm.attention_kwargs(layer)`` gives the
layer's scale, causality, sliding window, soft-cap and GPT-OSS sink logits), checks them with the
kernel's own validation (`Problem`) and computes A with the kernel's reference
(docs/METRICS.md#notation), so a picture of a head is exactly the softmax its statistics
summarise. It materialises ``[batch, head, rows, key_pos]``: meant for viewers and small inputs;
``rows`` bounds the memory to a block of query rows.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import InterpError
from interp.kernels._layout import to_bhtd
from interp.kernels._problem import prepare
from interp.kernels._reference import reference_probs

__all__ = ["attention_pattern"]


def attention_pattern(
    q: Float[Tensor, "batch _ _ d_head"],
    k: Float[Tensor, "batch _ _ d_head"],
    *,
    scale: float,
    causal: bool = True,
    softcap: Optional[float] = None,
    sliding_window: Optional[int] = None,
    sink_logits: Optional[Float[Tensor, " head"]] = None,
    key_padding_mask: Optional[Bool[Tensor, "batch key_pos"]] = None,
    rows: Optional[tuple[int, int]] = None,
    masked: bool = False,
    dtype: torch.dtype = torch.float64,
    layout: str = "bhtd",
) -> Float[Tensor, "batch head rows key_pos"]:
    """Attention probabilities of every head, ``A_ij = exp(s_ij) / sum_{j' visible} exp(s_ij')``.

    ``s_ij = scale * q_i . k_j``, soft-capped when ``softcap`` is given; query row i sits at
    absolute position ``key_pos - query_pos + i`` (end-aligned). With ``sink_logits`` the learned
    sink joins the normaliser and is dropped (GPT-OSS). GQA: query head h reads kv head
    ``h // (head // kv_head)``.

    Args:
        q: post-RoPE queries, as for `attention_stats`.
        k: post-RoPE keys, not repeated over GQA groups, as for `attention_stats`.
        scale: the softmax scale (``**lm.attention_kwargs(layer)`` gives this and the next four).
        causal: mask keys after the query.
        softcap: attention logit soft-cap (Gemma 2); None = none.
        sliding_window: query i sees keys with i - sliding_window < j; None = all.
        sink_logits: learned sink logit per query head (GPT-OSS); None = none.
        key_padding_mask: True = real token (HF attention_mask), as for `attention_stats`.
        rows: only query rows ``[start, stop)`` (indices into q's query_pos); the largest
            temporary is then ``[batch, head, stop - start, key_pos]``.
        masked: NaN (instead of 0) where a key is not visible to the query (after it, outside
            the window, padding).
        dtype: the precision A is computed in (float64, the reference's, by default).
        layout: the axis order of q and k, as for `attention_stats`: "bhtd" (default) or
            "bthd" (TransformerLens's [batch, pos, head, d_head]). A is [batch, head, ...] either way.

    Returns:
        A ``[batch, head, rows, key_pos]`` in ``dtype``; 0 (NaN with ``masked``) on keys a query
        cannot see; padded query rows are 0 everywhere.

    Raises:
        InterpError: anything `attention_stats` refuses, or ``rows`` outside ``0..query_pos``.
    """
    q, k = to_bhtd(q, k, layout)
    settings = dict(scale=scale, causal=causal, softcap=softcap, sliding_window=sliding_window, sink_logits=sink_logits)
    stats_only = dict(
        sink_tokens=0, window=1, band=(0, 0), segments=None, n_segments=None, query_rows=None, columns=False
    )
    problem = prepare(q, k, **settings, key_padding_mask=key_padding_mask, **stats_only)  # every check of the kernel
    n_query, n_key = problem.query_pos, problem.key_pos
    start, stop = (0, n_query) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start < stop <= n_query:
        raise InterpError(f"rows {rows} outside the {n_query} query rows: give 0 <= start < stop <= {n_query}")
    if (start, stop) != (0, n_query) and causal:
        # a causal block of rows sees no key after its last row: cut the keys there, so the block
        # is its own end-aligned problem (row start..stop-1 at positions offset+start..offset+stop-1)
        end = n_key - n_query + stop
        mask = None if key_padding_mask is None else key_padding_mask[:, :end]
        problem = prepare(q[:, :, start:stop], k[:, :, :end], **settings, key_padding_mask=mask, **stats_only)
        s, a = reference_probs(problem, dtype)
        pad = (0, n_key - end)
        s, a = torch.nn.functional.pad(s, pad, value=float("-inf")), torch.nn.functional.pad(a, pad)
    else:
        s, a = reference_probs(problem, dtype)
        s, a = s[:, :, start:stop], a[:, :, start:stop]
    return a.masked_fill(s == float("-inf"), float("nan")) if masked else a

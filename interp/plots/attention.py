"""Attention-pattern viewer for one head: exact up to 1024 tokens, block-pooled above.

The pattern is computed here from one head's captured q and k (arrays, never a model, never
``output_attentions``): query rows are processed in chunks of ``chunk_size``, so the largest
temporary is ``[chunk_size, key_pos]``. Up to ``max_exact`` tokens the figure shows the attention
matrix A itself (the only [T, T] array ever built, and only for T <= 1024). Above that, each shown
cell is one block of A pooled over ``block x block`` tokens (the mean over the causal cells of the
block, or their max), accumulated chunk by chunk, so neither [head, T, T] nor [T, T] exists.

A is the kernel's own (`interp.kernels.attention_pattern`, docs/METRICS.md#notation):
``s_ij = scale * q_i . k_j`` (optionally soft-capped and windowed), ``A_ij = softmax_{j <= i} s_ij``;
when q has fewer rows than k, query row i sits at absolute position ``key_pos - query_pos + i``
(end-aligned, as with a KV cache). This module only chooses rows, pools and draws.

Typical use (capture one layer's q and k, pick the head and the key head it reads)::

    with interp.hooks.capture(lm, layers=[L], keep=("q", "k")) as cap:
        lm.forward(ids)
    q = cap["q", L][0, h]                        # [query_pos, d_head]
    k = cap["k", L][0, lm.arch.kv_map[h]]        # [key_pos, d_head]
    fig = attention_view(q, k, lm.token_strings(ids[0]), **pattern_kwargs(lm.attention_kwargs(L), h), layer=L, head=h)

``pattern_kwargs`` turns a layer's kernel settings (scale, sliding window, soft-cap, GPT-OSS
sink logits) into this module's keywords, so the picture is the model's own softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from interp.errors import InterpError
from interp.plots._tokens import MAX_TICKS, span_label, tick_text, token_label, token_ticks

__all__ = [
    "HeadPattern",
    "head_pattern",
    "pattern_figure",
    "attention_view",
    "norm_view",
    "token_label",
    "tick_text",
    "token_ticks",
    "MAX_TICKS",
    "pattern_kwargs",
]


def pattern_kwargs(attention: dict, head: int) -> dict:
    """`head_pattern` keywords for one head from a layer's kernel settings.

    Args:
        attention: ``lm.attention_kwargs(layer)`` (scale, causal, sliding_window, softcap and,
            for GPT-OSS, sink_logits [head]).
        head: the query head.
    """
    sinks = attention.get("sink_logits")
    return {
        "scale": float(attention["scale"]),
        "causal": bool(attention.get("causal", True)),
        "window": attention.get("sliding_window"),
        "softcap": attention.get("softcap"),
        "sink_logit": None if sinks is None else float(sinks[head]),
    }


MAX_EXACT = 1024  # longest sequence shown cell by cell; above it, block-pooled


@dataclass(frozen=True)
class HeadPattern:
    """One head's attention pattern, exact or block-pooled.

    Attributes:
        values: float32 [n_row_blocks, n_key_blocks]; exact A when ``block == 1``, else the pooled
            block value. NaN where a cell (block) holds no visible key (above the diagonal).
        block: tokens per block side (1 = exact).
        n_query: query rows of q.
        n_key: keys of k.
        pool: "mean" (mean of A over the block's causal cells) or "max"; "exact" when block == 1.
    """

    values: np.ndarray
    block: int
    n_query: int
    n_key: int
    pool: str

    @property
    def exact(self) -> bool:
        return self.block == 1

    @property
    def query_offset(self) -> int:
        """Absolute position of query row 0 (queries are end-aligned with the keys)."""
        return self.n_key - self.n_query

    def row_span(self, r: int) -> tuple[int, int]:
        """Absolute query positions [start, stop) of displayed row ``r``."""
        start = r * self.block
        return self.query_offset + start, self.query_offset + min(start + self.block, self.n_query)

    def col_span(self, c: int) -> tuple[int, int]:
        """Key positions [start, stop) of displayed column ``c``."""
        start = c * self.block
        return start, min(start + self.block, self.n_key)


def _as_tensor(x, name: str, dims: int) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    while t.dim() > dims and t.shape[0] == 1:  # accept [1, pos, d] or [1, 1, pos, d]
        t = t[0]
    if t.dim() != dims:
        raise InterpError(
            f"{name} must be one head's [pos, d_head] array, got shape {tuple(t.shape)}: "
            f"index the captured [batch, head, pos, d_head] tensor as cap['{name}', L][b, h]"
        )
    return t.to(device="cpu", dtype=torch.float32)


def _chunk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    start: int,
    stop: int,
    *,
    scale: float,
    causal: bool,
    window: Optional[int],
    softcap: Optional[float],
    key_mask: Optional[torch.Tensor],
    sink_logit: Optional[float] = None,
    key_weight: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, visible) for query rows [start, stop): both [rows, key_pos]; A is 0 where not visible.

    A is the kernel's own softmax (`interp.kernels.attention_pattern`: scale, soft-cap, window,
    padding and sink logit as `attention_stats` applies them), in float64. With ``key_weight``
    w [key_pos] it is the norm-weighted pattern a_ij w_j / sum_j' a_ij' w_j' instead.
    """
    from interp.kernels import attention_pattern

    a = attention_pattern(
        q[None, None], k[None, None], scale=scale, causal=causal, softcap=softcap, sliding_window=window,
        sink_logits=None if sink_logit is None else torch.tensor([float(sink_logit)]),
        key_padding_mask=None if key_mask is None else key_mask[None], rows=(start, stop), masked=True,
    )[0, 0]  # fmt: skip
    visible = ~torch.isnan(a)
    a = a.nan_to_num(0.0)
    if key_weight is not None:
        a = a * key_weight.to(a.dtype)
        a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    return a, visible


def head_pattern(
    q,
    k,
    *,
    scale: float,
    causal: bool = True,
    window: Optional[int] = None,
    softcap: Optional[float] = None,
    sink_logit: Optional[float] = None,
    key_mask=None,
    key_weight=None,
    max_exact: int = MAX_EXACT,
    blocks: int = 256,
    pool: str = "mean",
    chunk_size: int = 256,
) -> HeadPattern:
    """Attention pattern of one head from its q and k, computed in row chunks.

    Args:
        q (Tensor | numpy.ndarray): [query_pos, d_head] post-RoPE queries of the head (torch or numpy; a leading batch or
            head axis of size 1 is dropped).
        k (Tensor | numpy.ndarray): [key_pos, d_head] post-RoPE keys of the kv head it reads (``lm.arch.kv_map[h]``).
        scale: the model's softmax scale (``lm.arch.scale``).
        causal: mask keys after the query (j > i).
        window: sliding-window size (keys with i - j >= window are masked); None = full.
        softcap: attention logit soft-cap (Gemma 2); None = none.
        sink_logit: the head's learned sink logit (GPT-OSS), which joins the softmax
            normaliser without being a key; None = none.
        key_mask (Tensor | numpy.ndarray | None): optional bool [key_pos], True = real token (left padding is False).
        key_weight (Tensor | numpy.ndarray | None): optional [key_pos] weight per key, e.g. ||W_O^h v_j||
            (`interp.hooks.value_norms`): the pattern is then a_ij w_j normalised per row, the share
            of what key j adds to the head's output (Kobayashi et al. 2020).
        max_exact: longest sequence (max of query_pos, key_pos) shown exactly; above, pooled.
        blocks: about how many blocks per side when pooled.
        pool: "mean" (mean of A over the block's visible cells) or "max".
        chunk_size: query rows per chunk (the largest temporary is [chunk_size, key_pos]).

    Returns:
        A :class:`HeadPattern`.

    Raises:
        InterpError: shapes that do not fit, an unknown pool, or non-positive sizes.
    """
    q = _as_tensor(q, "q", 2)
    k = _as_tensor(k, "k", 2)
    if q.shape[1] != k.shape[1]:
        raise InterpError(f"q has d_head {q.shape[1]} but k has {k.shape[1]}: pass one head's q and its kv head's k")
    n_query, n_key = q.shape[0], k.shape[0]
    if n_query == 0 or n_key == 0:
        raise InterpError("empty q or k: capture at least one token")
    if n_query > n_key:
        raise InterpError(f"q has {n_query} rows but k only {n_key} keys: queries cannot outnumber keys")
    if pool not in ("mean", "max"):
        raise InterpError(f"unknown pool '{pool}': use 'mean' or 'max'")
    if max_exact < 1 or blocks < 1 or chunk_size < 1:
        raise InterpError("max_exact, blocks and chunk_size must be positive")
    mask = None
    if key_mask is not None:
        mask = torch.as_tensor(np.asarray(key_mask.cpu() if isinstance(key_mask, torch.Tensor) else key_mask))
        mask = mask.reshape(-1).to(torch.bool)
        if mask.shape[0] != n_key:
            raise InterpError(f"key_mask has {mask.shape[0]} entries but k has {n_key} keys")
    weight = None
    if key_weight is not None:
        weight = key_weight.detach().cpu() if isinstance(key_weight, torch.Tensor) else torch.as_tensor(key_weight)
        weight = weight.reshape(-1).double()
        if weight.shape[0] != n_key or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise InterpError(
                f"key_weight must hold one finite weight >= 0 per key ({n_key}), got shape {tuple(weight.shape)}"
            )
    kw = dict(scale=float(scale), causal=causal, window=window, softcap=softcap, key_mask=mask, sink_logit=sink_logit)
    kw["key_weight"] = weight

    if max(n_query, n_key) <= max_exact:
        out = np.empty((n_query, n_key), dtype=np.float32)
        for start in range(0, n_query, chunk_size):
            stop = min(start + chunk_size, n_query)
            a, visible = _chunk_attention(q, k, start, stop, **kw)
            out[start:stop] = a.masked_fill(~visible, float("nan")).numpy()
        return HeadPattern(values=out, block=1, n_query=n_query, n_key=n_key, pool="exact")

    block = math.ceil(max(n_query, n_key) / blocks)
    nb_q, nb_k = math.ceil(n_query / block), math.ceil(n_key / block)
    pad = nb_k * block - n_key
    acc = torch.zeros(nb_q, nb_k, dtype=torch.float64)
    count = torch.zeros(nb_q, nb_k, dtype=torch.float64)
    if pool == "max":
        acc.fill_(float("-inf"))
    for start in range(0, n_query, chunk_size):
        stop = min(start + chunk_size, n_query)
        a, visible = _chunk_attention(q, k, start, stop, **kw)
        rows = stop - start
        # pool keys inside the chunk: [rows, key_pos] -> [rows, nb_k]
        a = torch.nn.functional.pad(a, (0, pad)).view(rows, nb_k, block)
        vis = torch.nn.functional.pad(visible, (0, pad)).view(rows, nb_k, block)
        row_block = (torch.arange(start, stop) // block).unsqueeze(1).expand(rows, nb_k)
        count.scatter_add_(0, row_block, vis.sum(-1).double())
        if pool == "mean":
            acc.scatter_add_(0, row_block, a.sum(-1).double())
        else:
            part = a.masked_fill(~vis, float("-inf")).amax(-1).double()
            acc.scatter_reduce_(0, row_block, part, reduce="amax")
    if pool == "mean":
        values = torch.where(count > 0, acc / count.clamp_min(1), torch.full_like(acc, float("nan")))
    else:
        values = torch.where(count > 0, acc, torch.full_like(acc, float("nan")))
    return HeadPattern(values=values.float().numpy(), block=block, n_query=n_query, n_key=n_key, pool=pool)


def pattern_figure(
    pattern: HeadPattern,
    tokens: Sequence[str],
    *,
    title: Optional[str] = None,
    layer: Optional[int] = None,
    head: Optional[int] = None,
    colorscale: str = "Viridis",
    zmax: Optional[float] = None,
) -> go.Figure:
    """Heatmap of a :class:`HeadPattern` with query and key tokens in the hover.

    The axes are labelled with the tokens (every n-th past `MAX_TICKS` tokens); the masked cells
    (keys after the query, outside the window) are NaN and drawn blank, with no grid lines over
    them, so the figure can go into a paper as it is (`interp.plots.export.save_images`).

    Args:
        pattern: from :func:`head_pattern`.
        tokens: display string per key position (length ``pattern.n_key``).
        title: figure title (default names the layer/head and whether the view is exact).
        layer: shown in the default title.
        head: shown in the default title.
        zmax: top of the colour scale (default: the largest value).
    """
    if len(tokens) != pattern.n_key:
        raise InterpError(f"got {len(tokens)} tokens for a pattern over {pattern.n_key} keys: pass one per key")
    nb_q, nb_k = pattern.values.shape
    if pattern.exact:
        ys = [token_label(pattern.query_offset + r, tokens[pattern.query_offset + r]) for r in range(nb_q)]
        xs = [token_label(c, tokens[c]) for c in range(nb_k)]
        y_text = [tick_text(tokens[pattern.query_offset + r]) for r in range(nb_q)]
        x_text = [tick_text(tokens[c]) for c in range(nb_k)]
        what = "attention"
        how = f"exact, {pattern.n_key} tokens"
    else:
        ys = [span_label(*pattern.row_span(r), tokens) for r in range(nb_q)]
        xs = [span_label(*pattern.col_span(c), tokens) for c in range(nb_k)]
        y_text = [tick_text(tokens[pattern.row_span(r)[0]]) + "…" for r in range(nb_q)]
        x_text = [tick_text(tokens[pattern.col_span(c)[0]]) + "…" for c in range(nb_k)]
        what = f"{pattern.pool} attention"
        how = f"{pattern.pool} over {pattern.block}x{pattern.block}-token blocks, {pattern.n_key} tokens"
    name = " ".join(
        p for p in (f"layer {layer}" if layer is not None else "", f"head {head}" if head is not None else "") if p
    )
    if title is None:
        title = f"{name + ': ' if name else ''}attention pattern ({how})"
    finite = pattern.values[np.isfinite(pattern.values)]
    top = zmax if zmax is not None else (float(finite.max()) if finite.size else 1.0)
    fig = go.Figure(
        go.Heatmap(
            z=pattern.values,
            x=xs,
            y=ys,
            zmin=0.0,
            zmax=top,
            colorscale=colorscale,
            colorbar={"title": {"text": what}},
            hovertemplate="query %{y}<br>key %{x}<br>" + what + ": %{z:.4f}<extra></extra>",
            hoverongaps=False,
        )
    )
    bare = {"type": "category", "showgrid": False, "zeroline": False, "showline": False}  # nothing over masked cells
    fig.update_layout(
        title=title,
        xaxis={"title": "key", **bare, **token_ticks(xs, x_text), "tickangle": -90, "constrain": "domain"},
        yaxis={"title": "query", **bare, **token_ticks(ys, y_text), "autorange": "reversed"},
        plot_bgcolor="white",
        height=max(450, min(900, 12 * nb_q + 160)),
    )
    return fig


def attention_view(
    q,
    k,
    tokens: Sequence[str],
    *,
    scale: float,
    layer: Optional[int] = None,
    head: Optional[int] = None,
    title: Optional[str] = None,
    **pattern_kw,
) -> go.Figure:
    """:func:`head_pattern` then :func:`pattern_figure`: one head's pattern with token hover.

    Args:
        q (Tensor | numpy.ndarray): [query_pos, d_head] one head's post-RoPE queries.
        k (Tensor | numpy.ndarray): [key_pos, d_head] the keys of the kv head it reads.
        tokens: display string per key position.
        scale: the model's softmax scale.
        **pattern_kw (Any): passed to :func:`head_pattern` (causal, window, softcap, sink_logit, key_mask,
            max_exact, blocks, pool, chunk_size); ``pattern_kwargs(lm.attention_kwargs(layer), head)``
            gives the model's own settings.
    """
    pattern = head_pattern(q, k, scale=scale, **pattern_kw)
    return pattern_figure(pattern, tokens, title=title, layer=layer, head=head)


def norm_view(
    q,
    k,
    key_weight,
    tokens: Sequence[str],
    *,
    scale: float,
    layer: Optional[int] = None,
    head: Optional[int] = None,
    **pattern_kw,
) -> go.Figure:
    """One head's plain pattern (left) beside its norm-weighted pattern (right), one figure.

    The right panel is a_ij w_j / sum_j' a_ij' w_j' with w_j = ``key_weight`` (||W_O^h v_j||,
    `interp.hooks.value_norms`): each key's share of what the head writes at query i, rather than
    of its attention (Kobayashi et al. 2020). A sink that takes attention but adds little fades
    on the right.

    Args:
        q (Tensor | numpy.ndarray): [query_pos, d_head] one head's post-RoPE queries.
        k (Tensor | numpy.ndarray): [key_pos, d_head] the keys of the kv head it reads.
        key_weight (Tensor | numpy.ndarray): [key_pos] the head's ||W_O^h v_j||.
        tokens: display string per key position.
        scale: the model's softmax scale.
        layer: shown in the titles.
        head: shown in the titles.
        **pattern_kw (Any): passed to :func:`head_pattern` for both panels.
    """
    from plotly.subplots import make_subplots

    plain = pattern_figure(head_pattern(q, k, scale=scale, **pattern_kw), tokens, layer=layer, head=head, zmax=1.0)
    normed = head_pattern(q, k, scale=scale, key_weight=key_weight, **pattern_kw)
    weighted = pattern_figure(normed, tokens, layer=layer, head=head, zmax=1.0)
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.1,
        subplot_titles=("attention a_ij", "norm-weighted a_ij ||W_O v_j|| (row-normalised)"),
    )  # fmt: skip
    for col, (part, x) in enumerate(((plain, 0.44), (weighted, 1.0)), start=1):
        trace = part.data[0]
        trace.update(colorbar={"title": {"text": "share"}, "x": x, "len": 0.9})
        if col == 2:
            trace.update(hovertemplate=trace.hovertemplate.replace("attention:", "norm-weighted:"))
        fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(part.layout.xaxis, row=1, col=col)
        fig.update_yaxes(part.layout.yaxis, row=1, col=col)
    fig.update_layout(
        title=plain.layout.title.text.replace("attention pattern", "attention vs norm-weighted pattern"),
        plot_bgcolor="white",
        height=plain.layout.height,
        width=2 * plain.layout.height + 200,
    )
    return fig

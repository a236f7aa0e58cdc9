"""From one window's kernel statistics to a record, and from the records of every window to a `SinkResult`.

`reduce_layer` keeps, of one layer's statistics, what the result needs (JSON-able, so finished
windows go into the resume log); `combine` stacks the records of every window in text order.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jaxtyping import Float
from torch import Tensor

from interp.analyses.sinks.config import SinkConfig
from interp.analyses.sinks.measures import first_token_mass, sink_members, token_type
from interp.analyses.sinks.results import SinkResult

__all__ = ["combine", "reduce_layer"]


def reduce_layer(
    sink: Float[Tensor, "head query_pos"],
    recv_mean: Float[Tensor, "head key_pos"],
    layer: int,
    config: SinkConfig,
    window: Optional[int] = None,
    w_sink: Optional[Float[Tensor, "head query_pos"]] = None,
) -> dict:
    """One layer's kernel statistics of one window, reduced to what a `SinkResult` keeps.

    Args:
        sink: the kernel's row statistic ``sink`` (mass of each query on the first
            ``config.sink_tokens`` tokens), one window.
        recv_mean: the kernel's column statistic ``recv_mean`` (alpha_j), same window.
        layer: the layer's index (stored in the hits).
        window: the layer's sliding window W, or None (rows past W do not see position 0 and
            are left out of the first-token mass).
        w_sink: the value-weighted row statistic ``w_sink`` (key_weight = ||W_O^h v_j||), or None.

    Returns:
        first_token_mass [head], alpha0 [head], count [key_pos] (heads with alpha_j > eps), hits
        ([layer, head, position, alpha, hidden] of every sink member) and weighted_first_token_mass
        ([head], the same mean over ``w_sink``; None without it).
    """
    rm = recv_mean.double().cpu()
    member, hidden = sink_members(rm, config.tau, config.min_queries, window)
    return {
        "first_token_mass": first_token_mass(sink.cpu(), config.sink_tokens, window).numpy(),
        "alpha0": rm[:, 0].numpy(),
        "count": (rm > config.eps).sum(0).numpy(),
        "hits": [[layer, h, j, float(rm[h, j]), bool(hidden[h, j])] for h, j in member.nonzero().tolist()],
        "weighted_first_token_mass": None
        if w_sink is None
        else first_token_mass(w_sink.cpu(), config.sink_tokens, window).numpy(),
    }


def combine(
    lm_name: str,
    config: SinkConfig,
    layers: Sequence[int],
    n_heads: int,
    windows_tokens,
    records,
    *,
    layer_windows: Optional[Sequence[Optional[int]]] = None,
    first_is_bos: Optional[Sequence[bool]] = None,
    model_bos: Optional[bool] = None,
) -> SinkResult:
    """Assemble per-window records (from `scan_window`) and their tokens into a `SinkResult`.

    Args:
        windows_tokens (Sequence[tuple[list[str], list[bool]]]): per window, (token strings,
            special flags).
        records (Sequence[dict]): per window, the record of `interp.experiments.sinks.scan_window` (JSON-able:
            first_token_mass, alpha0, position_count, hits), in the same order.
        layer_windows: per layer of ``layers``, its sliding window (None: global); None: all global.
        first_is_bos: per window, whether its position 0 is the BOS token (None: not known).
        model_bos: whether the model prepends BOS to every text (None: not known).
    """
    hits, alphas, hidden = [], [], []
    for t, rec in enumerate(records):
        for layer, head, pos, alpha, hid in rec["hits"]:
            hits.append((t, layer, head, pos))
            alphas.append(alpha)
            hidden.append(hid)
    tokens = tuple(tuple(toks) for toks, _ in windows_tokens)
    types = tuple(tuple(token_type(s, sp) for s, sp in zip(toks, special)) for toks, special in windows_tokens)
    return SinkResult(
        config=config,
        model=lm_name,
        layers=tuple(layers),
        n_heads=n_heads,
        tokens=tokens,
        token_types=types,
        first_token_mass=np.asarray([r["first_token_mass"] for r in records], dtype=float),
        alpha0=np.asarray([r["alpha0"] for r in records], dtype=float),
        weighted_first_token_mass=_weighted(records),
        position_count=np.sum([np.asarray(r["position_count"]) for r in records], axis=0),
        hits=np.asarray(hits, dtype=np.int64).reshape(-1, 4),
        hit_alpha=np.asarray(alphas, dtype=float),
        hit_hidden=np.asarray(hidden, dtype=bool),
        windows=tuple(layer_windows) if layer_windows is not None else (),
        first_is_bos=tuple(bool(b) for b in first_is_bos) if first_is_bos is not None else (),
        model_bos=model_bos,
    )


def _weighted(records) -> Optional[np.ndarray]:
    """[text, layer, head] value-weighted first-token mass, or None when a record has none
    (a resume log written before value weighting)."""
    if not records or any(r.get("weighted_first_token_mass") is None for r in records):
        return None
    return np.asarray([r["weighted_first_token_mass"] for r in records], dtype=float)

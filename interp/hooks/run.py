"""`run_with_cache`: one call from text (or token ids) to the logits and a `interp.hooks.Cache`.

The notebook entry point, shaped like TransformerLens's ``model.run_with_cache``: strings are
encoded exactly as the model sees them (`LoadedModel.encode`; a list of strings is left-padded
by `LoadedModel.encode_batch` and its mask used), the chosen sites of the chosen layers are
captured in one forward pass (`interp.hooks.capture`), and ``stop_at_layer`` ends that pass
early (capture's own stop). The cache remembers the model and the padding mask, so
``cache.pattern`` and ``cache.stats`` apply both.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

from interp.errors import InterpError
from interp.hooks._cache_reads import TL_NAMES
from interp.hooks.capture import Cache, capture
from interp.protocols import Model

__all__ = ["run_with_cache"]

DEFAULT_SITES = ("q", "k", "v", "z", "resid_pre")


def _inputs(lm: Model, text_or_ids: Any, attention_mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """(input_ids [batch, pos], attention_mask [batch, pos] or None) on the model's device."""
    if isinstance(text_or_ids, str) or (
        isinstance(text_or_ids, (list, tuple)) and text_or_ids and all(isinstance(t, str) for t in text_or_ids)
    ):
        if attention_mask is not None:
            raise InterpError("attention_mask goes with token ids; texts get their own (left padding)")
        if isinstance(text_or_ids, str):
            return lm.encode(text_or_ids), None
        return lm.encode_batch(list(text_or_ids))
    try:
        ids = torch.as_tensor(text_or_ids)
    except (TypeError, ValueError, RuntimeError):
        ids = None
    if ids is None or ids.ndim not in (1, 2) or ids.numel() == 0 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise InterpError(
            "run_with_cache takes a string, a list of strings, or integer token ids [pos] or [batch, pos], "
            f"got {type(text_or_ids).__name__}{tuple(ids.shape) if ids is not None else ''}"
        )
    ids = (ids[None] if ids.ndim == 1 else ids).to(torch.long)
    if int(ids.min()) < 0 or int(ids.max()) >= lm.vocab_size:
        raise InterpError(
            f"token ids must lie in 0..{lm.vocab_size - 1} (the vocabulary), got {int(ids.min())}..{int(ids.max())}"
        )
    lm.check_length(int(ids.shape[1]))
    if attention_mask is not None:
        mask = torch.as_tensor(attention_mask)
        if (
            tuple(mask.shape) != tuple(ids.shape)
            or mask.is_floating_point()
            or not bool(((mask == 0) | (mask == 1)).all())
        ):
            raise InterpError(
                f"attention_mask must be 0/1 integers (or bool) shaped like the ids {tuple(ids.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        attention_mask = mask.to(device=lm.device, dtype=torch.long)
    return ids.to(lm.device), attention_mask


def _sites(sites: tuple[str, ...]) -> tuple[str, ...]:
    """The sites to capture: "pattern" (TransformerLens's hook_pattern) stands for the q and k it is read from."""
    out: list[str] = []
    for site in sites:
        out += [s for s in (("q", "k") if site == "pattern" else (site,)) if s not in out]
    return tuple(out)


NamesFilter = Optional[str | Sequence[str] | Callable[[str], bool]]


def _filtered(lm: Model, names_filter: Any) -> tuple[list[int], tuple[str, ...]]:
    """(layers, sites) that cover the TransformerLens hook names ``names_filter`` picks."""
    every = {
        f"blocks.{layer}.{suffix}": (layer, site)
        for layer in range(lm.arch.n_layers)
        for suffix, (site, _) in TL_NAMES.items()
    }
    if callable(names_filter):
        names = [name for name in every if names_filter(name)]
    else:
        names = [names_filter] if isinstance(names_filter, str) else list(names_filter)
        unknown = [name for name in names if name not in every]
        if unknown:
            raise InterpError(
                f"unknown hook name(s) {unknown[:4]} in names_filter: use blocks.L.attn.hook_{{q,k,v,z,rot_q,rot_k,"
                f"pattern}} or blocks.L.hook_{{resid_pre,resid_post,attn_out,mlp_out}} with L in 0..{lm.arch.n_layers - 1}"
            )
    if not names:
        raise InterpError("names_filter matches no hook name: it sees names such as blocks.5.attn.hook_z")
    layers = sorted({every[name][0] for name in names})
    return layers, _sites(tuple(every[name][1] for name in names))


def run_with_cache(
    lm: Model,
    text_or_ids: Any,
    layers: Optional[Iterable[int] | int] = None,
    sites: Sequence[str] = DEFAULT_SITES,
    stop_at_layer: Optional[int] = None,
    attention_mask: Optional[Tensor] = None,
    names_filter: NamesFilter = None,
) -> tuple[Optional[Tensor], Cache]:
    """One forward pass that returns the logits and a `Cache` of the chosen sites.

    Args:
        lm: the model (`interp.models.LoadedModel`, either backend).
        text_or_ids: a string (encoded by `LoadedModel.encode`, BOS as the model expects), a
            list of strings (left-padded by `LoadedModel.encode_batch`, whose mask is used),
            or token ids [pos] or [batch, pos] (used as given: no BOS added).
        layers: layers to capture, or one layer (None = all, or all that run before ``stop_at_layer``).
        sites: sites to capture (`interp.hooks.SITES`); ``cache.pattern`` needs q and k
            (``"pattern"`` stands for both).
        stop_at_layer: run only layers 0..stop_at_layer-1 (1..n_layers) and return no logits.
        attention_mask: [batch, pos] HF mask (1 = real token) for padded token ids.
        names_filter: instead of ``layers`` and ``sites``, TransformerLens's way: a hook name, a
            list of names or a predicate over names (``blocks.5.attn.hook_pattern``); the layers
            and sites they name are captured (every chosen site on every chosen layer).

    Returns:
        (logits [batch, pos, vocab], or None when ``stop_at_layer`` ended the pass; the
        `Cache`). q, k, v, z under tuple keys are [batch, head, pos, d_head]; under
        TransformerLens names (``cache["blocks.5.attn.hook_z"]``) [batch, pos, head, d_head].

    Raises:
        InterpError: bad input, layers, sites, names_filter or stop_at_layer, all before the forward pass.

    Example:
        >>> logits, cache = lm.run_with_cache("The cat sat on the mat", stop_at_layer=6)
        >>> cache.pattern(5, head=1)[0]  # [query, key]
    """
    ids, mask = _inputs(lm, text_or_ids, attention_mask)
    if names_filter is not None:
        if layers is not None or tuple(sites) != DEFAULT_SITES:
            raise InterpError("give names_filter or layers/sites, not both (names_filter picks both)")
        layers, sites = _filtered(lm, names_filter)
    sites = _sites((sites,) if isinstance(sites, str) else tuple(sites))
    logits = None
    with capture(lm, layers, keep=sites, stop_at_layer=stop_at_layer) as cache:
        logits = lm.forward(ids, mask)
    cache.attention_mask = mask
    cache.input_ids = ids
    return (None if cache.stopped else logits), cache

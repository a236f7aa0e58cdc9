"""The pure steps of a patching sweep: which patches a target means, which of them can change
anything, how they are grouped into forward passes, and what each pass swaps in.

- `target_index` is the thin setter of every target: a target name becomes a site and one
  (layer, head, pos) row per patch (-1 = all / not applicable), TransformerLens-style.
- `first_difference` finds a patch's first position whose clean and corrupted values differ;
  a patch with none copies only equal values (a no-op), and positions before it are the same in
  the patched and corrupted runs (attention is causal), so a pass can start there.
- `plan_passes` groups patches into passes in order of (first changed position, layer), so that
  passes can reuse the corrupted run's prefix KV cache and residual stream.
- `patch_mask` and `swap` build the edit of one pass: copy ``j`` of the prompts gets patch ``j``.
- `attribution_estimates` contracts (clean - corrupt) with the metric's gradient per patch.

Everything here works on shapes and captured tensors; the runner that captures them is
`interp.experiments.patching`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.patching.config import TARGETS
from interp.errors import InterpError
from interp.hooks.families import ArchInfo

__all__ = [
    "HEAD_SITES",
    "LOGIT_BUDGET_BYTES",
    "target_index",
    "first_difference",
    "plan_passes",
    "patch_mask",
    "swap",
    "default_rows",
    "kv_fits",
    "attribution_estimates",
]

HEAD_SITES = ("q", "k", "v", "z")  # sites with a (kv) head axis: [batch, head, pos, d_head]
LOGIT_BUDGET_BYTES = 2**28  # default rows per forward: one pass's activations stay near 256 MiB


def target_index(
    arch: ArchInfo, target: str, n_pos: int, *, by_pos: Optional[bool] = None, layers: Optional[Sequence[int]] = None
) -> tuple[str, Int[Tensor, "patch 3"], tuple[str, ...], tuple[int, ...], Optional[str]]:
    """The patches of a target: which site, and one (layer, head, pos) row per patch.

    Args:
        arch: the model's architecture (layer and head counts).
        target: a key of `TARGETS`.
        n_pos: tokens per prompt.
        by_pos: patch each position separately (default: yes for residual sites, no for heads).
        layers: layers to patch (None = all).

    Returns:
        (site, index LongTensor [n_patches, 3] with -1 = "all" / not applicable, axes, shape of
        the dense score array, head axis name).

    Raises:
        InterpError: unknown target or layer out of range.
    """
    if target not in TARGETS:
        raise InterpError(f"unknown target '{target}': use one of {', '.join(TARGETS)}")
    site, head_axis = TARGETS[target]
    if by_pos is None:
        by_pos = head_axis is None
    chosen = list(range(arch.n_layers)) if layers is None else sorted({arch.check_layer(int(x)) for x in layers})
    if not chosen:
        raise InterpError("no layers chosen: pass at least one layer (or None for all)")
    n_heads = {"head": arch.n_heads, "kv_head": arch.n_kv_heads, None: 1}[head_axis]
    heads = range(n_heads) if head_axis else [-1]
    positions = range(n_pos) if by_pos else [-1]
    rows = [(layer, h, p) for layer in chosen for h in heads for p in positions]
    axes: tuple[str, ...] = ("layer",) + (("head",) if head_axis else ()) + (("pos",) if by_pos else ())
    shape = (arch.n_layers,) + ((n_heads,) if head_axis else ()) + ((n_pos,) if by_pos else ())
    return site, torch.tensor(rows, dtype=torch.long), axes, shape, head_axis


def first_difference(clean: Tensor, corrupt: Tensor, head: int, pos: int, has_head: bool) -> int:
    """The first position where patch (head, pos) copies values that differ from the corrupted
    ones in some prompt; ``n_pos`` when it copies only equal values (a no-op).

    Args:
        clean: one layer's site on the clean run, position on axis -2 ([batch, (kv_)head, pos,
            d_head] or [batch, pos, d_model]).
        corrupt: the same site on the corrupted run (same shape).
        head: the patch's head (-1 = all).
        pos: the patch's position (-1 = all).
        has_head: the site has a head axis.
    """
    n_pos = clean.shape[-2]
    if has_head and head >= 0:
        clean, corrupt = clean[:, head], corrupt[:, head]
    if pos >= 0:
        return pos if not torch.equal(clean[..., pos, :], corrupt[..., pos, :]) else n_pos
    differs = (clean != corrupt).movedim(-2, 0).reshape(n_pos, -1).any(1)
    return int(differs.float().argmax()) if bool(differs.any()) else n_pos


def plan_passes(
    pos: Int[Tensor, " patch"],
    per_pass: int,
    n: int,
    n_pos: int,
    *,
    reuse: bool,
    layer: Optional[Int[Tensor, " patch"]] = None,
    min_tokens: int = 96,
) -> list[Tensor]:
    """Split patches into passes (lists of patch numbers), in order of (first changed position, layer).

    A pass holds at most ``per_pass`` patches. With prefix reuse (``reuse``) a pass recomputes
    only the positions from its first patch on, and with ``layer`` (layer skipping) only the
    layers from its lowest patch on; so a pass also closes at a change of position or of layer
    once it holds ``min_tokens`` tokens of work (``n`` prompts times the positions from its
    first patch on): later passes then start later or higher, while passes much smaller than
    that would waste the batching. Without either, every pass is full.

    Args:
        pos: each patch's first changed position (`first_difference`).
        per_pass: most patches per pass.
        n: number of prompts.
        n_pos: tokens per prompt.
        reuse: passes start at their first changed position.
        layer: each patch's layer, when passes start at their lowest layer.
    """
    layer = torch.zeros_like(pos) if layer is None else layer
    order = sorted(range(len(pos)), key=lambda i: (max(0, int(pos[i])), int(layer[i]), i))
    out, current = [], []
    for i in order:
        key = (max(0, int(pos[i])), int(layer[i]))
        if current:
            first, last = current[0], current[-1]
            start = max(0, int(pos[first]))
            changed = key != (max(0, int(pos[last])), int(layer[last]))
            enough = changed and len(current) * n * (n_pos - start) >= min_tokens
            if len(current) >= per_pass or ((reuse or bool(layer.any())) and enough):
                out.append(torch.tensor(current))
                current = []
        current.append(i)
    if current:
        out.append(torch.tensor(current))
    return out


def patch_mask(rows: Sequence[tuple[int, int, int, int]], shape: tuple[int, ...], n: int, has_head: bool) -> Tensor:
    """Bool mask over a batched site (copies x prompts first; all axes but the feature axis)
    marking each copy's patched entries.

    Args:
        rows: (copy j, layer, head, pos) of the patches of the layer being built.
        shape: the batched site's shape.
        n: prompts per copy.
        has_head: the site has a head axis.
    """
    mask = torch.zeros(shape[:-1], dtype=torch.bool)
    for j, _layer, head, pos in rows:
        prompts = slice(j * n, (j + 1) * n)
        p = slice(None) if pos < 0 else pos
        if has_head:
            mask[prompts, slice(None) if head < 0 else head, p] = True
        else:
            mask[prompts, p] = True
    return mask


def swap(mask: Tensor, source: Tensor) -> Callable[[Tensor], Tensor]:
    """Edit function: entries under ``mask`` (all of the last axis) come from ``source``."""

    def fn(x: Tensor) -> Tensor:
        return torch.where(mask.unsqueeze(-1), source.to(x.dtype), x)

    return fn


def default_rows(vocab_size: int, d_model: int, n: int, n_pos: int) -> int:
    """Rows per forward so that one pass's activations stay within the budget (logits at one position)."""
    per_row = 4 * (vocab_size + 16 * n_pos * d_model)
    return max(n, min(4096, LOGIT_BUDGET_BYTES // per_row))


def kv_fits(arch: ArchInfo, n: int, n_pos: int) -> bool:
    """Whether every layer's corrupted keys and values of ``n`` prompts fit the memory budget (for prefix reuse)."""
    return 2 * 4 * n * n_pos * arch.n_kv_heads * arch.d_head * arch.n_layers <= LOGIT_BUDGET_BYTES


def attribution_estimates(
    index: Int[Tensor, "patch 3"],
    clean: dict[int, Tensor],
    corrupt: dict[int, Tensor],
    grads: dict[int, Optional[Tensor]],
    has_head: bool,
) -> Float[Tensor, " patch"]:
    """First-order estimate of every patch: sum over its entries of (a_clean - a_corrupt) * dM/da
    (Nanda 2023, "Attribution patching"), summed over prompts and the feature axis.

    Args:
        index: (layer, head, pos) per patch (-1 = all).
        clean: layer -> the site's values on the clean run.
        corrupt: layer -> the site's values on the corrupted run (same shapes).
        grads: layer -> dM/da on the corrupted run (None: the metric does not depend on it).
        has_head: the site has a head axis.
    """
    contrib = {}
    for layer, g in grads.items():
        g = torch.zeros_like(corrupt[layer]) if g is None else g
        contrib[layer] = ((clean[layer] - corrupt[layer]) * g).sum(dim=(0, -1)).detach().double().cpu()
    out = torch.empty(len(index), dtype=torch.float64)
    for i, (layer, head, pos) in enumerate(index.tolist()):
        a = contrib[layer]
        if has_head:
            a = a if head < 0 else a[head]
        out[i] = a.sum() if pos < 0 else a[..., pos].sum()
    return out

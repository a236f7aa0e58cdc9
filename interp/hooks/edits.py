"""Scoped interventions on heads and sites.

Every intervention is an :class:`Edit`: a (site, layer, fn) triple where ``fn`` maps the site's
canonical tensor to its replacement. The named helpers below (ablation, scaling, patching,
uniform attention, key bias) are thin constructors of edits; a `ComputedKeyBias` computes its
keys and bias from the live q and k of its head at every forward pass; ``intervene`` attaches a list of
them for the duration of a ``with`` block and removes them on exit, also when the body raises.
Edits compose in list order.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Union

import torch

from interp.errors import InterpError
from interp.hooks.sites import HEAD_SITES, KV_SITES, SITES
from interp.protocols import Model

__all__ = [
    "Edit",
    "KeyBias",
    "ComputedKeyBias",
    "intervene",
    "ablate_head",
    "scale_head",
    "patch_head",
    "patch_site",
    "uniform_attention",
    "key_bias",
    "WindowAttention",
    "window_attention",
    "start_at_layer",
]


@dataclass(frozen=True)
class Edit:
    """Replace the canonical tensor of ``site`` at ``layer`` by ``fn(tensor)``.

    ``head`` is informational (validated against the model) for per-head edits.
    """

    site: str
    layer: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    head: Optional[int] = None


@dataclass(frozen=True)
class KeyBias:
    """Add ``bias`` to the pre-softmax score of every key in ``keys`` for query head ``head``.

    Attributes:
        layer, head: the query head.
        keys: BoolTensor [batch, key_pos] (or [key_pos]), True for biased keys.
        bias: float, or Tensor [batch, query_pos] (one bias per query row; broadcastable).
    """

    layer: int
    head: int
    keys: torch.Tensor
    bias: Union[float, torch.Tensor]

    def columns(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Extra q and k columns whose scaled product is the bias (see adapters)."""
        b, h, tq, _ = q.shape
        _, kv, tk, _ = k.shape
        keys = self.keys.to(k.device)
        keys = keys.expand(b, tk) if keys.dim() == 1 else keys
        if keys.shape[-1] != tk:
            raise InterpError(f"key_bias keys cover {keys.shape[-1]} positions but the layer sees {tk} keys")
        bias = torch.as_tensor(self.bias, dtype=q.dtype, device=q.device)
        bias = bias.expand(b, tq) if bias.dim() < 2 else bias[:, -tq:]
        q_extra = torch.zeros(b, h, tq, 1, dtype=q.dtype, device=q.device)
        q_extra[:, self.head, :, 0] = bias / scale
        k_extra = keys.to(k.dtype)[:, None, :, None].expand(b, kv, tk, 1)
        return q_extra, k_extra


@dataclass(frozen=True)
class ComputedKeyBias:
    """A `KeyBias` on query head ``head`` of ``layer`` whose keys and per-row bias are computed at
    every forward pass from the head's live q and k (after RoPE), e.g. ACT's sink set and bias
    (`interp.analyses.calibration.ACTRule`). Edits of earlier layers in the same pass are seen.

    Attributes:
        layer, head: the query head.
        rule: ``(q, k) -> (keys, bias)`` with q [batch, 1, query_pos, d_head] of the head and k
            [batch, 1, key_pos, d_head] of its kv head, both float32; keys [batch, key_pos] bool,
            bias [batch, query_pos] (or a float).
    """

    layer: int
    head: int
    rule: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Union[float, torch.Tensor]]]

    def columns(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The extra q and k columns of the `KeyBias` the rule gives for this pass."""
        group = q.shape[1] // k.shape[1]
        qh = q[:, self.head : self.head + 1].float()
        kh = k[:, self.head // group : self.head // group + 1].float()
        keys, bias = self.rule(qh, kh)
        return KeyBias(self.layer, self.head, keys, bias).columns(q, k, scale)


@dataclass(frozen=True)
class WindowAttention:
    """Restrict query head ``head`` of ``layer`` to its first ``sinks`` real keys and its last
    ``window`` keys (StreamingLLM, Xiao et al. 2024, for one head), within the model's own mask.

    Attributes:
        layer, head: the query head.
        window: query i keeps the keys with i - j < window (>= 1; 1 = only itself).
        sinks: and the first ``sinks`` real tokens (>= 0).
    """

    layer: int
    head: int
    window: int
    sinks: int


def _check(lm: Model, layer: int, head: Optional[int], site: str) -> None:
    if site not in SITES:
        raise InterpError(f"unknown site '{site}': use one of {', '.join(SITES)}")
    lm.arch.check_layer(layer)
    if head is not None:
        if site in KV_SITES:
            if not 0 <= head < lm.arch.n_kv_heads:
                raise InterpError(
                    f"kv head {head} out of range: the model has {lm.arch.n_kv_heads} kv heads (0-{lm.arch.n_kv_heads - 1})"
                )
        else:
            lm.arch.check_head(head)


@contextmanager
def intervene(lm: Model, edits: Sequence[Union[Edit, KeyBias, ComputedKeyBias, WindowAttention]]) -> Iterator[None]:
    """Apply ``edits`` to every forward pass inside the block; remove them on exit.

    Raises:
        InterpError: a layer, head or site out of range (before anything is attached).
    """
    for e in edits:
        if isinstance(e, (KeyBias, ComputedKeyBias, WindowAttention)):
            _check(lm, e.layer, e.head, "q")
        elif isinstance(e, Edit):
            _check(lm, e.layer, e.head, e.site)
        else:
            raise InterpError(f"not an edit: {e!r} (use the helpers in interp.hooks)")
    handles = []
    try:
        for e in edits:
            if isinstance(e, (KeyBias, ComputedKeyBias)):
                handles.append(lm.adapter.attach_key_bias(lm, e.layer, e.columns))
            elif isinstance(e, WindowAttention):
                handles.append(lm.adapter.attach_window(lm, e.layer, e.head, e.window, e.sinks))
            else:
                handles.append(lm.adapter.attach(lm, e.site, e.layer, e.fn))
        yield
    finally:
        for h in handles:
            h.remove()


def _head_edit(site: str, layer: int, head: int, op: Callable[[torch.Tensor], torch.Tensor], pos=None) -> Edit:
    """Edit one head's slice [:, head, pos] of a head site (q, k, v or z)."""
    index = slice(None) if pos is None else pos

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, head, index] = op(x[:, head, index])
        return x

    return Edit(site, layer, fn, head)


def ablate_head(layer: int, head: int, mode: str = "zero", mean: Optional[torch.Tensor] = None) -> Edit:
    """Zero or mean ablation of a head's output z.

    Args:
        mode: "zero", or "mean" with ``mean`` of shape [d_head] or [pos, d_head] (e.g. the
            head's z averaged over a reference batch).
    """
    if mode == "zero":
        return _head_edit("z", layer, head, torch.zeros_like)
    if mode == "mean":
        if mean is None:
            raise InterpError("mean ablation needs `mean`: the head's z averaged over reference inputs")
        return _head_edit("z", layer, head, lambda x: mean.to(x).expand_as(x).clone())
    raise InterpError(f"unknown ablation mode '{mode}': use 'zero' or 'mean'")


def scale_head(layer: int, head: int, factor: float) -> Edit:
    """Multiply a head's output z by ``factor``."""
    return _head_edit("z", layer, head, lambda x: x * factor)


def patch_head(layer: int, head: int, value: torch.Tensor, site: str = "z", pos=None) -> Edit:
    """Replace a head's slice of ``site`` (z, q, k or v) by ``value`` (e.g. from another run's capture).

    ``value`` is the head's slice: [batch, pos, d_head] (or broadcastable); ``pos`` restricts the
    patch to positions (an int, slice or index tensor).
    """
    if site not in HEAD_SITES + KV_SITES:
        raise InterpError(f"patch_head works on q, k, v or z, not '{site}' (use patch_site)")

    def op(x: torch.Tensor) -> torch.Tensor:
        v = value.to(x)
        if pos is not None and v.dim() == 3 and v.shape[1] != x.shape[1]:
            v = v[:, pos]
        try:
            return v.expand_as(x).clone()
        except RuntimeError:
            raise InterpError(
                f"patch_head({layer}, {head}): value {tuple(value.shape)} is not head {head}'s {site} slice "
                f"[batch, pos, d_head] {tuple(x.shape)} (or broadcastable to it): pass e.g. cap['{site}', {layer}][:, {head}]"
            ) from None

    return _head_edit(site, layer, head, op, pos)


def patch_site(site: str, layer: int, value: torch.Tensor, pos=None) -> Edit:
    """Replace a whole site (e.g. resid_pre) or its positions ``pos`` by ``value``."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        if pos is None:
            return value.to(x).expand_as(x).clone()
        x = x.clone()
        if site in HEAD_SITES + KV_SITES:
            x[:, :, pos] = value.to(x)[:, :, pos] if value.shape == x.shape else value.to(x)
        else:
            x[:, pos] = value.to(x)[:, pos] if value.shape == x.shape else value.to(x)
        return x

    return Edit(site, layer, fn)


@contextmanager
def start_at_layer(lm: Model, layer: int, resid: torch.Tensor) -> Iterator[None]:
    """Run the forward passes inside the block from ``layer`` on, with ``resid`` entering it.

    The layers below ``layer`` are skipped (they pass their input through). Use it when every
    edit of the block sits at ``layer`` or above, with ``resid`` = the residual stream entering
    ``layer`` in an unedited run of the same input (e.g. ``cap["resid_pre", layer]``): the
    result is then that of the full pass, for the cost of the layers from ``layer`` on. HF
    backend only; removed on exit, also when the body raises.

    Args:
        resid: [batch, pos, d_model], the batch and positions of the passes inside the block.
    """
    lm.arch.check_layer(layer)
    if lm.backend != "hf":
        raise InterpError("start_at_layer needs the HF backend (backend='hf')")
    handle = lm.adapter.start_at(lm, layer, resid)
    try:
        yield
    finally:
        handle.remove()


def uniform_attention(layer: int, head: int) -> Edit:
    """Make a head attend uniformly over its visible keys by setting its query to zero.

    This is the masking used by Wu et al. 2024 (retrieval heads) for the causal check.
    """
    return _head_edit("q", layer, head, torch.zeros_like)


def key_bias(layer: int, head: int, keys: torch.Tensor, bias: Union[float, torch.Tensor]) -> KeyBias:
    """Add ``bias`` to the scores of ``keys`` for one query head (no [T, T] tensor is built).

    With ``keys`` = the first token and ``bias = log(gamma)`` this is ZeroTuning's initial-token
    scaling; with a per-row bias it implements ACT's redistribution (see `interp.analyses.sinks`).
    """
    return KeyBias(layer, head, keys, bias)


def window_attention(layer: int, head: int, window: int, sinks: int = 4) -> WindowAttention:
    """Restrict one head to its first ``sinks`` keys and its last ``window`` keys (a per-head
    StreamingLLM cache: what a KV-cache policy keeps for a windowed head; `interp score atlas`).

    Key j stays visible to query i when ``j < first_real + sinks`` or ``i - j < window``, and the
    model's own mask (causal, sliding window, padding) allows it. Works on every attention
    implementation of the HF backend (the layer's own attention function runs over the kept
    keys, per query block: no [T, T] tensor) and on the TL bridge (its eager scores).

    Raises:
        InterpError: window < 1 or sinks < 0 (now); a layer or head out of range (in `intervene`).
    """
    from interp.hooks._window_heads import check_window

    check_window(window, sinks)
    return WindowAttention(layer, head, window, sinks)

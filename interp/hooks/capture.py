"""Scoped capture of canonical sites.

``capture(lm, layers, keep, on_layer, stop_at_layer)`` is a context manager. Inside it every forward pass
records the kept sites of the chosen layers; on exit every listener it attached is removed (also
when the body raises), and it checks that each requested (site, layer) actually fired once any
did. When the body raises, its exception propagates unchanged, with a note naming the hooks that
had not fired by then (an error is never masked by the check).

With ``on_layer`` the q, k and v of each layer are handed to a callback as that layer's attention
runs, instead of being stored: this is what lets `interp.kernels` reduce a long input layer by
layer without ever holding every layer's q and k.

One way to end a forward pass early: a listener raises `_StopForward`, and `capture` catches it
at the block (the statements after that pass in the block are skipped). ``stop_at_layer`` raises
it once layer ``stop_at_layer - 1`` has run; `interp.hooks.streaming` raises it after the last
streamed layer's q and k.

The `Cache` it yields also remembers the model and the padding mask of the latest pass (read
from the attention_mask the model was called with), for ``cache.pattern`` and ``cache.stats``
(`interp.hooks._cache_reads`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

from interp.errors import InterpError, add_note
from interp.hooks._cache_reads import CacheReads
from interp.hooks.sites import SITES
from interp.hooks.values import ValueNorms, value_norms
from interp.protocols import Model

__all__ = ["Cache", "Capture", "capture", "check_layers"]


def check_layers(lm: Model, layers: Optional[Iterable[int] | int]) -> list[int]:
    """Validated, sorted layer list (all layers when None; one int is that one layer)."""
    if layers is None:
        return list(range(lm.arch.n_layers))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    out = sorted({lm.arch.check_layer(int(layer)) for layer in layers})
    if not out:
        raise InterpError("no layers chosen: pass at least one layer (or None for all)")
    return out


def _check_finite(site: str, layer: int, x: torch.Tensor) -> None:
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InterpError(
            f"NaN or inf in the captured {site} of layer {layer}: the model produced non-finite activations "
            "(check the dtype: float16 overflows on some models; use float32 or bfloat16)"
        )


class _StopForward(Exception):
    """Raised from a listener to end the forward pass there; `capture` catches it at its block."""


class Cache(CacheReads):
    """What a capture recorded: ``cache[site, layer]`` is the tensor of the latest forward pass.

    A negative layer in a tuple key counts from the model's last layer (``cache["z", -1]``).
    ``cache.all(site, layer)`` lists the tensors of every forward pass in order (one per decode
    step when generating with a KV cache). TransformerLens hook names are aliases that answer in
    TransformerLens's layout: ``cache["blocks.5.attn.hook_z"]`` is ``cache["z", 5].transpose(1, 2)``
    ([batch, pos, head, d_head]; likewise hook_rot_q, hook_rot_k, hook_v, and hook_q/hook_k on
    models without RoPE), ``cache["blocks.5.hook_resid_pre"]`` is ``cache["resid_pre", 5]`` and
    ``cache["blocks.5.attn.hook_pattern"]`` is ``cache.pattern(5)``. The tuple keys keep interp's
    [batch, head, pos, d_head]. ``cache.pattern`` and ``cache.stats`` apply the layer's own
    softmax settings and the forward's padding (see `interp.hooks._cache_reads`).

    Attributes:
        layers: the captured layers.
        keep: the captured sites.
        lm: the model captured from.
        attention_mask: [batch, key_pos] padding mask of the latest pass (1 = real), or None.
        input_ids: [batch, pos] the ids `run_with_cache` ran (None from `capture`).
        stopped: whether ``stop_at_layer`` ended the pass early.
    """

    def __init__(self, layers: Sequence[int], keep: Sequence[str], lm: Optional[Model] = None):
        self.layers = list(layers)
        self.keep = tuple(keep)
        self.lm = lm  # the captured model (value_norms reads its output projection)
        self._store: dict[tuple[str, int], list[torch.Tensor]] = {}
        self.fired: set[tuple[str, int]] = set()
        self.attention_mask: Optional[torch.Tensor] = None
        self.input_ids: Optional[torch.Tensor] = None  # set by run_with_cache
        self.stopped = False

    def _record(self, site: str, layer: int, x: torch.Tensor, store: bool) -> None:
        _check_finite(site, layer, x)
        self.fired.add((site, layer))
        if store:
            self._store.setdefault((site, layer), []).append(x.detach())

    def __getitem__(self, key: tuple[str, int] | str) -> torch.Tensor:
        if isinstance(key, str):
            return self._named(key)
        if not (isinstance(key, tuple) and len(key) == 2):
            raise InterpError(f"cache keys are (site, layer) or a TransformerLens hook name, got {key!r}")
        n = self.lm.arch.n_layers if self.lm is not None else 0
        if isinstance(key[1], int) and -n <= key[1] < 0:  # from the last layer, as TransformerLens counts
            key = (key[0], n + key[1])
        if key[0] == "pattern":
            return self.pattern(key[1])
        return self.all(*key)[-1]

    def all(self, site: str, layer: int) -> list[torch.Tensor]:
        if site not in self.keep:
            raise InterpError(
                f"site '{site}' was not kept (this cache has {', '.join(self.keep) or 'none'}): pass "
                f"sites=(..., '{site}') to run_with_cache (keep= for capture)"
            )
        self._check_captured(layer, "")
        got = self._store.get((site, layer))
        if not got:
            raise InterpError(f"nothing captured for {site} of layer {layer}: run a forward pass inside the capture")
        return got

    def __contains__(self, key: tuple[str, int] | str) -> bool:
        if isinstance(key, str):
            try:
                site, layer, _ = self._tl_site(key)
            except InterpError:
                return False
            return all((s, layer) in self._store for s in (("q", "k") if site == "pattern" else (site,)))
        return key in self._store

    def value_norms(self, layer: int) -> ValueNorms:
        """||v_j|| [batch, kv_head, pos] and ||W_O^h v_j|| [batch, head, pos] of ``layer``'s latest
        pass, from the captured v and the layer's own output projection (`interp.hooks.value_norms`).

        Raises:
            InterpError: v was not kept, the layer not captured, or no model is known.
        """
        if self.lm is None:
            raise InterpError("this capture does not know its model: use interp.hooks.capture(lm, ...)")
        return value_norms(self.lm, layer, self["v", layer])

    def clear(self) -> None:
        """Drop stored tensors (keeps the capture attached)."""
        self._store.clear()


@contextmanager
def capture(
    lm: Model,
    layers: Optional[Iterable[int] | int] = None,
    keep: Sequence[str] = ("q", "k", "v", "z", "resid_pre", "resid_post", "attn_out", "mlp_out"),
    on_layer: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
    stop_at_layer: Optional[int] = None,
) -> Iterator[Cache]:
    """Record the ``keep`` sites of ``layers`` for every forward pass run inside the block.

    Args:
        lm: a `interp.models.LoadedModel`.
        layers: layers to capture (None = all; an int is one layer). Out-of-range layers raise `InterpError`.
        keep: sites to store (see `interp.hooks.sites`).
        on_layer: optional ``on_layer(layer, q, k, v)`` called as each layer's attention runs
            (q [batch, head, pos, d_head]; k, v [batch, kv_head, key_pos, d_head]). q, k, v are
            then not stored unless also listed in ``keep``.
        stop_at_layer: end each forward pass once layers ``0 .. stop_at_layer - 1`` have run
            (1..n_layers; TransformerLens's meaning): the rest of the model and the logits are
            never computed, and the block's statements after that pass are skipped. ``layers``
            then defaults to those layers and may not go past them.

    Yields:
        A `Cache` (``Capture`` is the same class, its former name).

    Raises:
        InterpError: unknown site, bad layer or stop_at_layer, non-finite activations, or (on exit) a requested
            site that never fired although a forward pass ran. An exception raised by the
            block propagates unchanged (with a note listing the hooks that had not fired).
    """
    unknown = [s for s in keep if s not in SITES]
    if unknown:
        raise InterpError(f"unknown site(s) {unknown}: use any of {', '.join(SITES)}")
    chosen = _chosen_layers(lm, layers, stop_at_layer)
    cap = Cache(chosen, keep, lm)
    handles = []
    try:
        handles.append(_mask_reader(lm, cap))
        for layer in chosen:
            for site in keep:
                if on_layer is not None and site in ("q", "k", "v"):
                    continue
                handles.append(lm.adapter.attach(lm, site, layer, _recorder(cap, site, layer, True)))
            if on_layer is not None:
                handles.extend(_streamer(lm, cap, layer, on_layer, keep))
        if stop_at_layer is not None:  # attached last: the layer's own listeners run first
            handles.append(lm.adapter.attach(lm, "resid_post", stop_at_layer - 1, _stop))
        yield cap
    except _StopForward:
        cap.stopped = True
    except BaseException as err:
        # The block's own error propagates unchanged; what had not fired by then is a note on it.
        missing = _missing(cap, chosen, keep, on_layer)
        if cap.fired and missing:
            add_note(err, f"raised inside a capture; hooks that had not fired yet: {_listed(missing)}")
        raise
    finally:
        for h in handles:
            h.remove()
    missing = _missing(cap, chosen, keep, on_layer)
    if cap.fired and missing:
        raise InterpError(
            f"these hooks never fired: {_listed(missing)}; the adapter does not match this model's modules"
        )


def _chosen_layers(lm: Model, layers: Optional[Iterable[int] | int], stop_at_layer: Optional[int]) -> list[int]:
    """The layers to capture, checked against ``stop_at_layer`` (before anything is attached)."""
    if stop_at_layer is None:
        return check_layers(lm, layers)
    n = lm.arch.n_layers
    if not (isinstance(stop_at_layer, int) and not isinstance(stop_at_layer, bool) and 1 <= stop_at_layer <= n):
        raise InterpError(
            f"stop_at_layer must be an int in 1..{n} (the pass runs layers 0..stop_at_layer-1 of the model's {n}), "
            f"got {stop_at_layer!r}"
        )
    chosen = check_layers(lm, range(stop_at_layer) if layers is None else layers)
    if chosen[-1] >= stop_at_layer:
        raise InterpError(
            f"layer {chosen[-1]} never runs with stop_at_layer={stop_at_layer} (layers 0-{stop_at_layer - 1} do): "
            f"raise stop_at_layer to {chosen[-1] + 1} or drop the later layers"
        )
    return chosen


def _stop(x: torch.Tensor) -> None:
    raise _StopForward


def _mask_reader(lm: Model, cap: Cache):
    """A pre-hook on the HF model (which the TL bridge calls too) that keeps each pass's attention_mask."""

    def read(module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        cap.attention_mask = mask.detach() if isinstance(mask, torch.Tensor) else None  # 2-d or refused later

    return lm.hf_model.register_forward_pre_hook(read, with_kwargs=True)


def _missing(cap: Cache, chosen: Sequence[int], keep: Sequence[str], on_layer) -> list[tuple[str, int]]:
    """Requested (site, layer) pairs that have not fired (q stands for q, k, v when streaming)."""
    wanted = {(s, layer) for layer in chosen for s in keep}
    if on_layer is not None:
        wanted |= {("q", layer) for layer in chosen}
    return sorted(wanted - cap.fired)


def _listed(missing: list[tuple[str, int]]) -> str:
    return f"{missing[:6]}{' ...' if len(missing) > 6 else ''}"


def _recorder(cap: Cache, site: str, layer: int, store: bool):
    def fn(x: torch.Tensor) -> None:
        cap._record(site, layer, x, store)

    return fn


def _streamer(lm: Model, cap: Cache, layer: int, on_layer, keep):
    """Listeners that collect q, k, v of one attention call and hand them to ``on_layer``."""
    pending: dict[str, torch.Tensor] = {}

    def grab(site):
        def fn(x):
            cap._record(site, layer, x, site in keep)
            pending[site] = x.detach()
            if len(pending) == 3:
                q, k, v = pending.pop("q"), pending.pop("k"), pending.pop("v")
                on_layer(layer, q, k, v)

        return fn

    return [lm.adapter.attach(lm, s, layer, grab(s)) for s in ("q", "k", "v")]


Capture = Cache  # the former name, kept so existing code and notebooks run unchanged

"""Scoped capture of canonical sites.

``capture(lm, layers, keep, on_layer)`` is a context manager. Inside it every forward pass
records the kept sites of the chosen layers; on exit every listener it attached is removed (also
when the body raises), and it checks that each requested (site, layer) actually fired once any
did. When the body raises, its exception propagates unchanged, with a note naming the hooks that
had not fired by then (an error is never masked by the check).

With ``on_layer`` the q, k and v of each layer are handed to a callback as that layer's attention
runs, instead of being stored: this is what lets `interp.kernels` reduce a long input layer by
layer without ever holding every layer's q and k.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

from interp.errors import InterpError, add_note
from interp.hooks.sites import SITES
from interp.hooks.values import ValueNorms, value_norms
from interp.protocols import Model

__all__ = ["Capture", "capture", "check_layers"]


def check_layers(lm: Model, layers: Optional[Iterable[int]]) -> list[int]:
    """Validated, sorted layer list (all layers when None)."""
    if layers is None:
        return list(range(lm.arch.n_layers))
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


class Capture:
    """What a capture recorded: ``cap[site, layer]`` is the tensor of the latest forward pass.

    ``cap.all(site, layer)`` lists the tensors of every forward pass in order (one per decode
    step when generating with a KV cache).
    """

    def __init__(self, layers: Sequence[int], keep: Sequence[str], lm: Optional[Model] = None):
        self.layers = list(layers)
        self.keep = tuple(keep)
        self.lm = lm  # the captured model (value_norms reads its output projection)
        self._store: dict[tuple[str, int], list[torch.Tensor]] = {}
        self.fired: set[tuple[str, int]] = set()

    def _record(self, site: str, layer: int, x: torch.Tensor, store: bool) -> None:
        _check_finite(site, layer, x)
        self.fired.add((site, layer))
        if store:
            self._store.setdefault((site, layer), []).append(x.detach())

    def __getitem__(self, key: tuple[str, int]) -> torch.Tensor:
        return self.all(*key)[-1]

    def all(self, site: str, layer: int) -> list[torch.Tensor]:
        if site not in self.keep:
            raise InterpError(f"site '{site}' was not kept: pass keep=(..., '{site}') to capture()")
        if layer not in self.layers:
            raise InterpError(f"layer {layer} was not captured: captured layers are {self.layers}")
        got = self._store.get((site, layer))
        if not got:
            raise InterpError(f"nothing captured for {site} of layer {layer}: run a forward pass inside the capture")
        return got

    def __contains__(self, key: tuple[str, int]) -> bool:
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
    layers: Optional[Iterable[int]] = None,
    keep: Sequence[str] = ("q", "k", "v", "z", "resid_pre", "resid_post", "attn_out", "mlp_out"),
    on_layer: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
) -> Iterator[Capture]:
    """Record the ``keep`` sites of ``layers`` for every forward pass run inside the block.

    Args:
        lm: a `interp.models.LoadedModel`.
        layers: layers to capture (None = all). Out-of-range layers raise `InterpError`.
        keep: sites to store (see `interp.hooks.sites`).
        on_layer: optional ``on_layer(layer, q, k, v)`` called as each layer's attention runs
            (q [batch, head, pos, d_head]; k, v [batch, kv_head, key_pos, d_head]). q, k, v are
            then not stored unless also listed in ``keep``.

    Yields:
        A `Capture`.

    Raises:
        InterpError: unknown site, bad layer, non-finite activations, or (on exit) a requested
            site that never fired although a forward pass ran. An exception raised by the
            block propagates unchanged (with a note listing the hooks that had not fired).
    """
    unknown = [s for s in keep if s not in SITES]
    if unknown:
        raise InterpError(f"unknown site(s) {unknown}: use any of {', '.join(SITES)}")
    chosen = check_layers(lm, layers)
    cap = Capture(chosen, keep, lm)
    handles = []
    try:
        for layer in chosen:
            for site in keep:
                if on_layer is not None and site in ("q", "k", "v"):
                    continue
                handles.append(lm.adapter.attach(lm, site, layer, _recorder(cap, site, layer, True)))
            if on_layer is not None:
                handles.extend(_streamer(lm, cap, layer, on_layer, keep))
        yield cap
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


def _missing(cap: Capture, chosen: Sequence[int], keep: Sequence[str], on_layer) -> list[tuple[str, int]]:
    """Requested (site, layer) pairs that have not fired (q stands for q, k, v when streaming)."""
    wanted = {(s, layer) for layer in chosen for s in keep}
    if on_layer is not None:
        wanted |= {("q", layer) for layer in chosen}
    return sorted(wanted - cap.fired)


def _listed(missing: list[tuple[str, int]]) -> str:
    return f"{missing[:6]}{' ...' if len(missing) > 6 else ''}"


def _recorder(cap: Capture, site: str, layer: int, store: bool):
    def fn(x: torch.Tensor) -> None:
        cap._record(site, layer, x, store)

    return fn


def _streamer(lm: Model, cap: Capture, layer: int, on_layer, keep):
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

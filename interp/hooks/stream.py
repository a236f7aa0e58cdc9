"""Streaming: hand each layer's q and k to a callback as its attention runs, and check they all came.

Every runner that reduces attention layer by layer (heads, sinks, preplan, retrieval, the prefix
walk) goes through here. The idea: a layer's post-RoPE q and k are given to ``on_layer`` the
moment that layer's attention runs, reduced there (e.g. by `interp.kernels.attention_stats`) and
dropped, so memory holds one layer's q and k at a time, never every layer's.

Two ways in, one mechanism:

- `stream_layers(lm, input_ids, layers, on_layer)`: one forward pass. Unless the logits are
  asked for (``full=True``) the pass stops right after the last requested layer (capture's
  early stop, the one mechanism: a private exception raised from that layer's hook): the later
  layers, MLPs and the [batch, pos, vocab] logits (1.6 GB at 8k tokens for SmolLM2) are never computed.
- ``with streaming(lm, layers, on_layer): ...``: any number of forward passes in the block
  (a greedy decode loop, a walk over cached prefixes, a pass under `interp.hooks.intervene`);
  with ``stop_early=True`` the block's one pass stops after the last requested layer.

Both check, on the way out, that every requested layer fired, and the same number of times (once
per forward pass): a layer the adapter misses, or one skipped in some pass, is an `InterpError`
rather than a silently partial result. When the block itself raises, that exception propagates
unchanged, with a note saying which layers had fired by then.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

from jaxtyping import Float, Integer
from torch import Tensor

from interp.errors import InterpError, add_note
from interp.hooks.capture import _StopForward, capture, check_layers
from interp.protocols import Model

__all__ = ["LayerCallback", "Streamed", "streaming", "stream_layers"]

LayerCallback = Callable[..., None]
"""``on_layer(layer, q, k)``: q [batch, head, query_pos, d_head] and k [batch, kv_head, key_pos,
d_head], post-RoPE, as the layer's attention sees them (detached; k holds cached keys too on a
pass over a KV cache). Called once per requested layer per forward pass, in layer order. With
``values=True`` it is ``on_layer(layer, q, k, v)``, v [batch, kv_head, key_pos, d_head]."""


@dataclass
class Streamed:
    """What a `streaming` block saw.

    Attributes:
        layers: the requested layers, sorted.
        fired: per layer, how many times its q and k reached the callback (one per forward pass).
        stopped: whether a pass was ended early after the last requested layer.
    """

    layers: list[int]
    fired: dict[int, int] = field(default_factory=dict)
    stopped: bool = False

    @property
    def passes(self) -> int:
        """Forward passes that reached the callback (the most any layer fired)."""
        return max(self.fired.values(), default=0)

    def check(self) -> None:
        """Raise now unless every requested layer fired in every pass so far (the block's exit
        checks this too; a long loop of passes calls it to fail at the first bad pass).

        Raises:
            InterpError: a layer that never fired, or fired in fewer passes than the others.
        """
        why = self._missing()
        if why:
            raise InterpError(
                f"no attention statistics from every layer: {why}; the hooks do not match the model's attention modules"
            )

    def _missing(self) -> str:
        """Why the fired counts are incomplete, or '' when every layer fired in every pass."""
        n = self.passes
        if n == 0:
            return f"none of the layers {_span(self.layers)} fired"
        short = [layer for layer in self.layers if self.fired.get(layer, 0) < n]
        if not short:
            return ""
        return (
            f"layers {_span(short)} fired in fewer passes than the others "
            f"({', '.join(f'{layer}: {self.fired.get(layer, 0)}' for layer in short[:6])} of {n})"
        )


def _span(layers: list[int]) -> str:
    return (
        str(layers)
        if len(layers) <= 8
        else f"[{', '.join(map(str, layers[:6]))}, ... {layers[-1]}] ({len(layers)} layers)"
    )


@contextmanager
def streaming(
    lm: Model,
    layers: Optional[Iterable[int]],
    on_layer: LayerCallback,
    *,
    stop_early: bool = False,
    values: bool = False,
) -> Iterator[Streamed]:
    """Hand every requested layer's q and k to ``on_layer`` for each forward pass run in the block.

    Args:
        lm: the model (`interp.models.Model`).
        layers: the layers to stream (None = all); checked with `interp.hooks.check_layers`.
        on_layer: ``on_layer(layer, q, k)`` with q [batch, head, query_pos, d_head] and
            k [batch, kv_head, key_pos, d_head] (see `LayerCallback`).
        stop_early: end the block's forward pass right after the last requested layer (the
            statements after that pass in the block are skipped; run one pass only).
        values: call ``on_layer(layer, q, k, v)`` with v [batch, kv_head, key_pos, d_head] too
            (for value-weighted statistics, `interp.hooks.value_norms`).

    Yields:
        A `Streamed` record, filled as the passes run.

    Raises:
        InterpError: bad layers; on exit, a requested layer that never fired or fired in fewer
            passes than the others (the adapter does not match the model). An exception raised
            by the block (or by ``on_layer``) propagates unchanged, with a note listing the
            layers that had fired.
    """
    chosen = check_layers(lm, layers)
    seen = Streamed(layers=chosen, fired={layer: 0 for layer in chosen})
    last = chosen[-1]

    def hook(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        if values:
            on_layer(layer, q, k, v)
        else:
            on_layer(layer, q, k)
        seen.fired[layer] += 1
        if stop_early and layer == last:
            raise _StopForward

    # the early stop is capture's: _StopForward raised here ends the pass, and capture catches it
    with capture(lm, layers=chosen, keep=(), on_layer=hook) as cap:
        try:
            yield seen
        except _StopForward:
            raise
        except BaseException as err:
            fired = [layer for layer in chosen if seen.fired[layer]]
            add_note(
                err,
                f"raised while streaming layers {_span(chosen)}; layers that had fired: {_span(fired) if fired else 'none'}",
            )
            raise
    seen.stopped = cap.stopped
    seen.check()


def stream_layers(
    lm: Model,
    input_ids: Integer[Tensor, "batch pos"],
    layers: Optional[Iterable[int]],
    on_layer: LayerCallback,
    *,
    attention_mask: Optional[Integer[Tensor, "batch pos"]] = None,
    full: bool = False,
    values: bool = False,
) -> Optional[Float[Tensor, "batch pos vocab"]]:
    """One forward pass over ``input_ids``, calling ``on_layer(layer, q, k)`` for each requested layer.

    Without ``full`` the pass stops after the last requested layer (the rest of the model is
    never run). Memory holds one layer's q and k at a time; what ``on_layer`` keeps is its own.

    Args:
        lm: the model (`interp.models.Model`).
        input_ids: [batch, pos] token ids (moved to the model's device here).
        layers: the layers to stream (None = all); checked with `interp.hooks.check_layers`.
        on_layer: gets q [batch, head, pos, d_head] and k [batch, kv_head, pos, d_head],
            post-RoPE (see `LayerCallback`).
        attention_mask: [batch, pos] HF attention mask (1 = real token), or None.
        full: run the whole pass and return its logits [batch, pos, vocab].
        values: hand v [batch, kv_head, pos, d_head] to ``on_layer`` too: ``on_layer(layer, q, k, v)``.

    Returns:
        The logits with ``full``, else None.

    Raises:
        InterpError: bad layers, or a requested layer whose hook never fired.

    Example:
        >>> norms = {}
        >>> stream_layers(lm, ids, [0, 5], lambda layer, q, k: norms.setdefault(layer, k.norm(dim=-1)))
    """
    device = lm.device
    ids = input_ids.to(device)
    mask = attention_mask.to(device) if attention_mask is not None else None
    logits = None
    with streaming(lm, layers, on_layer, stop_early=not full, values=values):
        logits = lm.forward(ids, mask)
    return logits if full else None

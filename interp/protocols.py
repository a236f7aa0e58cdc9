"""The typed surface of a model and of its hook adapter, apart from how they are built (no imports
of interp's own at run time).

`Model` is what experiment runners and hooks take as ``lm``; `interp.models.LoadedModel`
implements it. `Adapter` is what `interp.hooks` asks of the model's hook adapter
(`interp.hooks.HFAdapter`, `interp.hooks.TLAdapter` declare it). They live here, not in
`interp.models` or `interp.hooks`, so that either can name them without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:
    from interp.hooks.families import ArchInfo, LayerAttention

__all__ = ["Model", "Adapter", "Handle"]


@runtime_checkable
class Handle(Protocol):
    """What attaching a hook returns: ``remove()`` takes it off again."""

    def remove(self) -> None: ...


@runtime_checkable
class Adapter(Protocol):
    """A model family's hook adapter: everything `interp.hooks` and `LoadedModel` ask of the
    model's internals (`interp.hooks.adapters`; docs/FAMILIES.md says how to add one).

    Attributes:
        backend: "hf" (hooks on the HF module) or "tl" (a TransformerLens bridge).
    """

    backend: str

    def layer_attention(self, model: Any) -> tuple[LayerAttention, ...]:
        """Per-layer softmax settings (scale, window, soft-cap) read from the model's modules."""
        ...

    def sink_logits(self, lm: Model, layer: int) -> torch.Tensor | None:
        """The layer's learned sink logits [head] (float32), or None."""
        ...

    def head_output_weights(self, lm: Model, layer: int) -> torch.Tensor:
        """W_O per head of ``layer``: [head, d_head, d_model]."""
        ...

    def install(self, lm: Model) -> None:
        """Prepare the model for hooks (called once when it is loaded)."""
        ...

    def forward(self, lm: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        """One forward pass of the model's own code."""
        ...

    def attach(self, lm: Model, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Handle:
        """Call ``fn`` on the canonical tensor of ``site`` at ``layer`` (its return replaces it)."""
        ...

    def attach_key_bias(self, lm: Model, layer: int, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> Handle:
        """Add ``fn(q, k, scale)``'s extra q and k columns to ``layer``'s attention (a key bias)."""
        ...

    def attach_window(self, lm: Model, layer: int, head: int, window: int, sinks: int) -> Handle:
        """Restrict one query head to its first ``sinks`` keys and its last ``window`` keys."""
        ...


@runtime_checkable
class Model(Protocol):
    """What experiment runners may ask of a model: the typed surface of `LoadedModel`.

    Runners and public functions take ``lm: Model``. Only `interp.hooks` and `LoadedModel` itself
    touch the HF module or the TL bridge; everything else goes through these operations, so no
    analysis branches on the backend. A test double that implements them can stand in.
    """

    name: str
    arch: ArchInfo
    backend: str
    tokenizer: Any
    prepend_bos: bool | None  # the BOS setting (None: as the tokenizer does); prepends_bos is the effect
    adapter: Adapter  # the hook adapter: for interp.hooks only
    hf_model: Any  # the HF module: for interp.hooks and LoadedModel only

    @property
    def device(self) -> torch.device: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def stop_ids(self) -> frozenset[int]: ...
    @property
    def reuses_prefixes(self) -> bool: ...
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, grad: bool = False
    ) -> torch.Tensor: ...
    def logits_tail(
        self, input_ids: torch.Tensor, n: int = 1, *, past: Any = None, grad: bool = False
    ) -> torch.Tensor: ...
    def greedy(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        stop: Any = None,
        past: Any = None,
        progress: bool = False,
    ) -> torch.Tensor: ...
    def stop_rule(self, *, newline: bool = False) -> Callable[[int], bool]: ...
    def logits_at(self, input_ids: torch.Tensor, positions: Sequence[int], *, past: Any = None) -> torch.Tensor: ...
    def new_cache(self) -> Any: ...
    def cache_length(self, cache: Any) -> int: ...
    def crop_cache(self, cache: Any, length: int) -> None: ...
    def repeat_cache(self, cache: Any, copies: int, length: int) -> Any: ...
    def attention_kwargs(self, layer: int) -> dict[str, Any]: ...
    def check_length(self, n_tokens: int) -> None: ...
    @property
    def prepends_bos(self) -> bool: ...  # every encoded text starts with bos_id
    @property
    def bos_id(self) -> int | None: ...  # the id encode puts first; None when none is
    def starts_with_bos(self, ids: Sequence[int] | torch.Tensor) -> bool: ...  # position 0 is the tokenizer's BOS
    def with_bos(self, ids: Sequence[int]) -> list[int]: ...
    def chat_prompt(self, user: str, system: str | None = None) -> str: ...
    def tokens(self, text: str) -> list[int]: ...  # a piece of a longer sequence: no BOS
    def encode(self, text: str, *, check: bool = True, bos: bool = True) -> torch.Tensor: ...
    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...
    def decode(self, ids: Sequence[int] | torch.Tensor) -> str: ...
    def token_strings(self, ids: Sequence[int] | torch.Tensor) -> list[str]: ...

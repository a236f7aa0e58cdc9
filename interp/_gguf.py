"""GGUF files as loadable models: checked, dequantised once, cached as float32 safetensors.

A GGUF file (llama.cpp's format) holds quantised weights, the config and the tokenizer in one
file. ``transformers`` can read it (``from_pretrained(folder, gguf_file=...)``), but slowly (it
parses the whole vocabulary in Python and dequantises every tensor: 20 s for SmolLM2-135M, about
80 s for Gemma 3 270M on a laptop CPU), so interp converts a GGUF once into a folder of float32
safetensors plus the tokenizer, under ``$INTERP_CACHE``, and loads that folder afterwards.

This module owns that conversion and its guarantees:

- the architecture is checked before anything is written (`gguf_model_type`): one that
  transformers' GGUF loader cannot read, or that interp's family table has no adapter for, is an
  `InterpError` and the cache is left untouched;
- a conversion is atomic: it is written into a temporary sibling folder and renamed into place
  only when complete, so a conversion killed half-way never leaves a folder that later loads;
- `local_gguf_dir` caches any local ``.gguf`` by the sha256 of its content, so a renamed or
  copied file reuses its conversion and an edited one gets a new one.

The embedded models (`interp._embedded`) reuse `convert_gguf` with their own cache names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from interp.errors import InterpError

__all__ = ["cache_dir", "convert_gguf", "file_sha256", "gguf_model_type", "is_converted", "local_gguf_dir"]

# GGUF ``general.architecture`` names that transformers' loader maps to another HF model_type
# (transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint renames these the same way).
_ARCH_TO_MODEL_TYPE = {
    "gemma3": "gemma3_text",  # a Gemma 3 GGUF holds the text backbone only
    "gemma4": "gemma4_text",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}
_STALE_TEMP_SECONDS = 3600  # a temporary conversion folder untouched this long was left by a killed run
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where converted weights are cached: ``$INTERP_CACHE`` or the user's cache dir."""
    env = os.environ.get("INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("interp"))


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def gguf_model_type(path: Path) -> str:
    """The HF ``model_type`` a GGUF file converts to, checked against both loaders' tables.

    Reads only the file's metadata header (milliseconds; the vocabulary is skipped, not parsed).

    Raises:
        InterpError: not a GGUF file, an architecture transformers' GGUF loader does not read,
            or one that interp has no family adapter for.
    """
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from interp.hooks.families import SUPPORTED_MODEL_TYPES, UNSUPPORTED_MODEL_TYPES

    try:
        arch = _architecture(path)
    except (
        ValueError,
        OSError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        struct.error,
    ) as err:  # not GGUF, or cut short
        raise InterpError(f"cannot read {path} as a GGUF file: {err}") from err
    model_type = _ARCH_TO_MODEL_TYPE.get(arch, arch)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES and model_type not in GGUF_SUPPORTED_ARCHITECTURES:
        raise InterpError(
            f"{path} is a GGUF of architecture '{arch}', which transformers' GGUF loader cannot read "
            f"(it reads: {', '.join(sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ('general', 'tokenizer')))})"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        why = UNSUPPORTED_MODEL_TYPES.get(model_type, "interp has no hook adapter for this family")
        raise InterpError(
            f"{path} is a GGUF of architecture '{arch}' (model_type '{model_type}'): {why}. "
            f"Supported families: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def _architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, read from its header only."""
    try:  # transformers >= 5.x's header reader skips the vocabulary instead of parsing it
        from transformers.integrations.gguf.reader import read_gguf_metadata
    except ImportError:  # older releases: gguf's reader (parses every field; seconds on a big vocabulary)
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    metadata, _ = read_gguf_metadata(str(path))
    return str(metadata["general.architecture"])


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a complete conversion (only complete ones are ever renamed into place)."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def convert_gguf(
    target: Path,
    write_gguf: Callable[[Path], Path],
    *,
    extra_files: Iterable[Path] = (),
) -> Path:
    """Dequantise a GGUF into ``target`` (float32 safetensors + tokenizer), atomically; return ``target``.

    Args:
        target: the cache folder to create. Nothing is written there until the conversion is
            complete; then a temporary sibling folder is renamed to it in one step.
        write_gguf: given the temporary folder, returns the GGUF file to read: the file itself
            when it already exists on disk, or one it writes into that folder (an assembled
            split GGUF, which is deleted again before the weights are saved).
        extra_files: files copied next to the weights (e.g. the model's terms of use).

    Raises:
        InterpError: from ``write_gguf`` (a bad or incomplete GGUF), or transformers failing to
            read the file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        gguf = write_gguf(tmp)
        gguf_model_type(gguf)  # nothing reaches the cache for an architecture we cannot wrap
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (ValueError, OSError, KeyError, RuntimeError) as err:
            raise InterpError(f"transformers could not load the GGUF file {gguf}: {type(err).__name__}: {err}") from err
        if gguf.parent == tmp:
            gguf.unlink()  # an assembled copy: not needed once loaded
        # The dequantised weights are plain float32: drop the GGUF marker so the model can be saved.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for f in extra_files:
            shutil.copy2(f, tmp / f.name)
        if is_converted(target):  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _remove_stale_temps(target: Path) -> None:
    """Delete temporary folders of ``target`` left by conversions killed over an hour ago."""
    now = time.time()
    for old in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if now - old.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def local_gguf_dir(path: str | Path) -> Path:
    """The cached float32 conversion of a local ``.gguf`` file, converted on first use.

    The cache key is the sha256 of the file's content (``gguf-<first 16 hex digits>``), so the
    same file under another name reuses its conversion.

    Raises:
        InterpError: the file is missing, not a GGUF, or of an architecture interp cannot load
            (checked before anything is written).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InterpError(f"GGUF file {path} does not exist: pass the path of a .gguf file")
    model_type = gguf_model_type(path)  # fail before hashing 100s of MB
    target = cache_dir() / f"gguf-{file_sha256(path)[:16]}-{model_type}-f32"
    if is_converted(target):
        return target
    return convert_gguf(target, lambda _tmp: path.resolve())

"""What a loaded model *is*, by content: the identity a resumed run and run.json record.

A model's name says nothing about its weights: a ``model.gguf`` replaced in place, another
folder's file of the same name, or a HF folder whose weights were retrained all load under the
same name. A resume log stamped with the name alone would mix two models' results. So the stamp
holds a content hash of the weights (`weights_identity`):

- a local GGUF: its conversion's cache folder is named by the file's sha256
  (`interp._gguf.local_gguf_dir`), so that hash is the identity (``gguf-sha256:<16 hex>``), with
  no second read of the file;
- a local HF folder (the embedded models' conversions included): the sha256 of its weight files
  and config.json, combined (``sha256:<64 hex>``). Each file's hash is computed once and cached
  by path, size and modification time (``$INTERP_CACHE/weights-digests.json``), so the second
  run of a 1 GB model costs a stat per file;
- a hub id resolved by ``from_pretrained``: the hub's commit of the files (``hub:<id>@<commit>``);
- a model built in memory (`interp.models.wrap_model` of a random model): the sha256 of its
  parameters and buffers (``tensors-sha256:<64 hex>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

__all__ = ["weights_identity", "folder_digest"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_GGUF_CACHE = re.compile(r"^gguf-([0-9a-f]{16})-")  # interp._gguf.local_gguf_dir's folder names
_DIGESTS = "weights-digests.json"


def weights_identity(lm: Any) -> Optional[str]:
    """The content identity of ``lm``'s weights (see the module docstring for its forms).

    Args:
        lm: a loaded model (`interp.models.LoadedModel`) or anything with ``hf_model``.

    Returns:
        A string such as ``"sha256:9f2c..."``; None when the model has no weights to hash.
    """
    hf = getattr(lm, "hf_model", None)
    if hf is None:
        return None
    config = getattr(hf, "config", None)
    source = str(getattr(config, "_name_or_path", "") or "")
    folder = Path(source).expanduser() if source else None
    if folder is not None and folder.is_dir():
        match = _GGUF_CACHE.match(folder.name)
        if match:
            return f"gguf-sha256:{match.group(1)}"
        digest = folder_digest(folder)
        if digest is not None:
            return f"sha256:{digest}"
    commit = getattr(config, "_commit_hash", None)
    if source and commit:
        return f"hub:{source}@{commit}"
    return f"tensors-sha256:{_tensors_digest(hf)}"


def folder_digest(folder: str | os.PathLike) -> Optional[str]:
    """sha256 over a HF folder's weight files and config.json (name and content of each), or None
    when it holds no weight file. Each file's hash is cached by path, size and mtime."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
    )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        return None
    cache = _read_cache()
    combined = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = str(path.resolve())
        seen = cache.get(key)
        if isinstance(seen, dict) and seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns:
            sha = str(seen.get("sha256"))
        else:
            sha = _file_sha256(path)
            cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
            changed = True
        combined.update(f"{path.name}\t{sha}\n".encode())
    if changed:
        _write_cache(cache)
    return combined.hexdigest()


def _file_sha256(path: Path) -> str:
    from interp._gguf import file_sha256

    return file_sha256(path)


def _tensors_digest(module: Any) -> str:
    """sha256 of a module's parameters and buffers (name, dtype, shape and bytes of each)."""
    digest = hashlib.sha256()
    for name, tensor in sorted({**dict(module.named_parameters()), **dict(module.named_buffers())}.items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\t{data.dtype}\t{tuple(data.shape)}\n".encode())
        digest.update(data.view(-1).view(_byte_dtype()).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def _cache_path() -> Path:
    from interp._gguf import cache_dir

    return cache_dir() / _DIGESTS


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or damaged: recomputed
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict[str, Any]) -> None:
    """Replace the digest cache atomically, without the files that are gone (a test's temporary
    models); a cache that cannot be written only costs a re-hash."""
    cache = {key: value for key, value in cache.items() if os.path.exists(key)}
    path = _cache_path()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cache, f)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)

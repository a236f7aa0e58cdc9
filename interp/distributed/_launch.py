"""Launch options: the engine, and how each rank loads and places its model (see `interp.distributed`)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

from interp.distributed._world import World, world
from interp.errors import InterpError

# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------

_ENGINE: dict[str, Any] = {"name": "ranks", "workers": None}


@contextlib.contextmanager
def use_engine(name: str = "ranks", workers: Optional[int] = None) -> Iterator[None]:
    """Choose how `map_units` runs inside the block: ``"ranks"`` (the launcher's processes; one
    process when not launched) or ``"ray"`` (Ray actors, ``workers`` of them, one model each)."""
    if name not in ("ranks", "ray"):
        raise InterpError(f"unknown engine {name!r}: use 'ranks' (torchrun/accelerate/srun processes) or 'ray'")
    if workers is not None and workers < 1:
        raise InterpError(f"--workers must be at least 1; got {workers}")
    if name == "ray":
        from interp.distributed import _ray  # noqa: F401  (fails early, with the install hint, when ray is missing)
    old = dict(_ENGINE)
    _ENGINE.update(name=name, workers=workers)
    try:
        yield
    finally:
        _ENGINE.clear()
        _ENGINE.update(old)


def current_engine() -> tuple[str, Optional[int]]:
    return _ENGINE["name"], _ENGINE["workers"]


_PLACEMENT: dict[str, Any] = {"device_map": None, "max_memory": None}
_LOADING: dict[str, Any] = {}  # dtype / attn_implementation for every model a command loads


def configure(
    engine: str = "ranks",
    workers: Optional[int] = None,
    device_map: Optional[str] = None,
    max_memory: Optional[dict] = None,
    dtype: Optional[str] = None,
    attn_implementation: Optional[str] = None,
    model_backend: Optional[str] = None,
    prepend_bos: Optional[bool] = None,
) -> None:
    """Process-wide launch options (what the CLI's ``--engine/--workers/--device-map/--max-memory``
    set): the engine `map_units` uses and how `rank_model` places and loads each rank's model
    (``--dtype``, ``--attn-implementation``, ``--model-backend``, ``--prepend-bos/--no-prepend-bos``)."""
    if engine not in ("ranks", "ray"):
        raise InterpError(f"unknown --engine {engine!r}: use 'ranks' (torchrun/accelerate/srun processes) or 'ray'")
    if workers is not None and workers < 1:
        raise InterpError(f"--workers must be at least 1; got {workers}")
    if workers is not None and engine != "ray":
        raise InterpError("--workers is for --engine ray; with the launcher's ranks use torchrun --nproc-per-node N")
    if max_memory is not None and device_map is None:
        raise InterpError("--max-memory needs --device-map (e.g. --device-map auto)")
    if engine == "ray":
        from interp.distributed import _ray  # noqa: F401  (fails early, with the install hint, when ray is missing)
    _ENGINE.update(name=engine, workers=workers)
    _PLACEMENT.update(device_map=device_map, max_memory=max_memory)
    _LOADING.clear()
    if dtype is not None:
        _LOADING["dtype"] = dtype
    if attn_implementation is not None:
        _LOADING["attn_implementation"] = attn_implementation
    if model_backend is not None:
        if model_backend not in ("hf", "tl"):
            raise InterpError(
                f"unknown --model-backend {model_backend!r}: use hf (the HF module) or tl (a TransformerLens bridge over it)"
            )
        _LOADING["backend"] = model_backend
    if prepend_bos is not None:
        _LOADING["prepend_bos"] = bool(prepend_bos)


def rank_model(name: Optional[str] = None, **kwargs):
    """`interp.load_model` placed for this rank: on ``cuda:LOCAL_RANK`` when CUDA is present
    (else CPU), or spread over the rank's share of the GPUs with ``--device-map``."""
    from interp.models import load_model

    w = world()
    device_map, max_memory = _PLACEMENT["device_map"], _PLACEMENT["max_memory"]
    kwargs = {**_LOADING, **kwargs}
    if device_map is not None:
        return load_model(name, device_map=device_map, max_memory=rank_max_memory(max_memory, w), **kwargs)
    return load_model(name, device=rank_device(w), **kwargs)


# --------------------------------------------------------------------------------------------
# Devices per rank
# --------------------------------------------------------------------------------------------


def rank_device(w: Optional[World] = None) -> str:
    """``cuda:LOCAL_RANK`` when CUDA is present (``cuda:0`` in a one-process run), else ``cpu``."""
    import torch

    w = w or world()
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if w.local_rank >= count:
            raise InterpError(
                f"LOCAL_RANK={w.local_rank} but this machine has {count} CUDA devices: launch at most {count} processes per machine"
            )
        return f"cuda:{w.local_rank}"
    return "cpu"


def parse_max_memory(text: Optional[str]) -> Optional[dict]:
    """``"0=20GiB,1=20GiB,cpu=60GiB"`` -> ``{0: "20GiB", 1: "20GiB", "cpu": "60GiB"}``."""
    if text is None:
        return None
    out: dict = {}
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        device, sep, amount = part.partition("=")
        if not sep or not device or not amount:
            raise InterpError(f"--max-memory takes DEVICE=AMOUNT pairs like 0=20GiB,cpu=60GiB; got {part!r}")
        out[int(device) if device.isdigit() else device] = amount
    if not out:
        raise InterpError("--max-memory is empty: give DEVICE=AMOUNT pairs like 0=20GiB,cpu=60GiB, or omit it")
    return out


def rank_max_memory(
    max_memory: Optional[dict], w: Optional[World] = None, n_gpus: Optional[int] = None
) -> Optional[dict]:
    """This rank's share of the machine's GPUs for ``device_map="auto"``.

    With ``local_size`` ranks on a machine of ``n_gpus`` GPUs, local rank r owns GPUs
    ``r*g .. r*g+g-1`` (g = n_gpus // local_size), so 8 GPUs = 2 ranks x 4 GPUs. Keys of
    ``max_memory`` that are integers count GPUs within the rank's share (0 = its first GPU);
    GPUs outside the share are left out, so accelerate never places a layer there.

    Returns:
        A ``max_memory`` dict for ``from_pretrained``, or ``max_memory`` unchanged in a
        one-rank-per-machine run.
    """
    import torch

    w = w or world()
    n_gpus = torch.cuda.device_count() if n_gpus is None else n_gpus
    if w.local_size <= 1 or n_gpus == 0:
        return max_memory
    share = n_gpus // w.local_size
    if share == 0:
        raise InterpError(
            f"{w.local_size} ranks on a machine with {n_gpus} GPUs cannot each hold a model with --device-map: "
            f"launch at most {n_gpus} processes per machine"
        )
    own = [w.local_rank * share + i for i in range(share)]
    given = max_memory or {}
    out: dict = {}
    for i, gpu in enumerate(own):
        if i in given:
            out[gpu] = given[i]
        elif not any(isinstance(k, int) for k in given):
            free, _ = torch.cuda.mem_get_info(gpu)
            out[gpu] = int(free * 0.9)
    bad = [k for k in given if isinstance(k, int) and k >= share]
    if bad:
        raise InterpError(
            f"--max-memory names GPU {bad[0]} but each rank owns {share} GPUs (0..{share - 1}): index GPUs within the rank"
        )
    for k, v in given.items():
        if not isinstance(k, int):
            out[k] = v
    return out

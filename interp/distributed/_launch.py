"""Launch options: the engine, and how each rank loads and places its model (see `interp.distributed`).

Launch options are two frozen values the CLI builds from its flags and passes down, never module
state: `Launch` (how the work runs: engine, workers, device placement, ``--strict``) holds a
`LoadOptions` (how every model of the command is loaded: dtype, attention implementation, model
backend, BOS). ``execute``, the report and `rank_model` take them as arguments; a notebook passes
its own or uses the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from interp.distributed._world import World, world
from interp.errors import InterpError

__all__ = ["Launch", "LoadOptions", "rank_model", "rank_device", "parse_max_memory", "rank_max_memory"]

ENGINES = ("ranks", "ray")  # the launcher's processes (one when not launched), or Ray actors
DTYPES = ("float32", "bfloat16", "float16")
MODEL_BACKENDS = ("hf", "tl")  # hooks on the HF module, or a TransformerLens bridge over it
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's placement strategies


@dataclass(frozen=True)
class LoadOptions:
    """How every model a command loads is loaded (``--dtype``, ``--attn-implementation``,
    ``--model-backend``, ``--prepend-bos/--no-prepend-bos``); None leaves `interp.load_model`'s default.

    Raises:
        InterpError: an unknown dtype or model backend.
    """

    dtype: Optional[str] = None  # float32 (default), bfloat16 or float16
    attn_implementation: Optional[str] = None  # sdpa, eager, ... (default: sdpa where the family has it)
    backend: Optional[str] = None  # hf (default) or tl
    prepend_bos: Optional[bool] = None  # default: as the model's tokenizer does

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InterpError(f"unknown --dtype {self.dtype!r}: use float32, bfloat16 or float16")
        if self.backend is not None and self.backend not in MODEL_BACKENDS:
            raise InterpError(
                f"unknown --model-backend {self.backend!r}: use hf (the HF module) or tl (a TransformerLens bridge over it)"
            )

    def kwargs(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments of `interp.load_model`."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Launch:
    """How one command runs: the engine `map_units` uses, how `rank_model` places each rank's
    model, whether a failed check is an error, and the `LoadOptions` of every model it loads.

    Raises:
        InterpError: an unknown engine or device map, ``workers`` without Ray or below 1,
            ``max_memory`` without ``device_map``.
    """

    engine: str = "ranks"  # "ranks" (torchrun/accelerate/srun processes) or "ray" (Ray actors)
    workers: Optional[int] = None  # with engine "ray": number of actors (default: one per CPU or GPU)
    device_map: Optional[str] = None  # spread each rank's model over its devices (accelerate), e.g. "auto"
    max_memory: Optional[dict] = None  # with device_map: cap per device, {0: "20GiB", "cpu": "60GiB"}
    strict: bool = False  # a failed check of a finding is an error (exit code 3)
    load: LoadOptions = field(default_factory=LoadOptions)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InterpError(
                f"unknown --engine {self.engine!r}: use 'ranks' (torchrun/accelerate/srun processes) or 'ray'"
            )
        if self.workers is not None and self.workers < 1:
            raise InterpError(f"--workers must be at least 1; got {self.workers}")
        if self.workers is not None and self.engine != "ray":
            raise InterpError(
                "--workers is for --engine ray; with the launcher's ranks use torchrun --nproc-per-node N"
            )
        if self.max_memory is not None and self.device_map is None:
            raise InterpError("--max-memory needs --device-map (e.g. --device-map auto)")
        if self.device_map is not None:
            _check_device_map(self.device_map)
        if self.engine == "ray":
            from interp.distributed import _ray  # noqa: F401  (fails early, with the install hint, when ray is missing)


def _check_device_map(device_map: str) -> None:
    """``--device-map`` is one of accelerate's strategies or one device (cpu, cuda:0, ...)."""
    import torch

    if device_map in DEVICE_MAPS:
        return
    try:
        torch.device(device_map)
    except (RuntimeError, ValueError):
        raise InterpError(
            f"unknown --device-map {device_map!r}: use {', '.join(DEVICE_MAPS)}, or one device such as cpu or cuda:0"
        ) from None


def rank_model(name: Optional[str] = None, launch: Launch = Launch(), **kwargs):
    """`interp.load_model` with ``launch``'s `LoadOptions`, placed for this rank: on
    ``cuda:LOCAL_RANK`` when CUDA is present (else CPU), or spread over the rank's share of the
    GPUs with ``launch.device_map``. ``kwargs`` override the load options."""
    from interp.models import load_model

    w = world()
    kwargs = {**launch.load.kwargs(), **kwargs}
    if launch.device_map is not None:
        return load_model(
            name, device_map=launch.device_map, max_memory=rank_max_memory(launch.max_memory, w), **kwargs
        )
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

"""The rank layout of the standard launchers and the process group (see `interp.distributed`)."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from interp.digest import digest
from interp.errors import InterpError

_LAUNCH_HINT = "launch with `torchrun --nproc-per-node N -m interp ...` (or accelerate launch / srun)"


@dataclass(frozen=True)
class World:
    """This process's place in a launch: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """True on rank 0, the process that merges parts and writes results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise InterpError(f"{name}={value!r} is not an integer: unset it or {_LAUNCH_HINT}") from err


def _layout() -> World:
    """Rank layout from the environment (torchrun/accelerate names first, then Slurm's)."""
    size = _env_int("WORLD_SIZE")
    if size is None and (_env_int("SLURM_STEP_NUM_TASKS") or 1) > 1:  # srun without torchrun
        size, rank = _env_int("SLURM_STEP_NUM_TASKS"), _env_int("SLURM_PROCID")
        local, local_size = _env_int("SLURM_LOCALID") or 0, _env_int("SLURM_STEP_TASKS_PER_NODE") or 1
    else:
        rank, local, local_size = _env_int("RANK"), _env_int("LOCAL_RANK") or 0, _env_int("LOCAL_WORLD_SIZE") or 1
    if size is None or size == 1:
        return World()
    if size < 1:
        raise InterpError(f"WORLD_SIZE={size} must be at least 1: unset it or {_LAUNCH_HINT}")
    if rank is None:
        raise InterpError(
            f"WORLD_SIZE={size} is set but RANK is not, so this process has no place in a process group: {_LAUNCH_HINT}, or unset WORLD_SIZE to run one process"
        )
    if not 0 <= rank < size:
        raise InterpError(f"RANK={rank} is outside 0..{size - 1} (WORLD_SIZE={size}): {_LAUNCH_HINT}")
    return World(rank=rank, size=size, local_rank=local, local_size=max(local_size, 1))


def world() -> World:
    """This process's `World`; joins the process group on first use when WORLD_SIZE > 1.

    A process group the caller already initialised (``torch.distributed.init_process_group``)
    is used as it is. Otherwise MASTER_ADDR and MASTER_PORT must be set (torchrun and accelerate
    set them; under srun export them yourself). The backend is gloo unless
    ``INTERP_DIST_BACKEND`` says otherwise; ``INTERP_DIST_TIMEOUT`` (seconds, default 86400)
    bounds how long a rank waits for the others.

    Raises:
        InterpError: WORLD_SIZE without RANK or without MASTER_ADDR/MASTER_PORT.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        layout = _layout()
        return World(
            rank=dist.get_rank(), size=dist.get_world_size(), local_rank=layout.local_rank, local_size=layout.local_size
        )
    layout = _layout()
    if not layout.distributed:
        return layout
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise InterpError(
            f"WORLD_SIZE={layout.size} is set but there is no process group to join ({' and '.join(missing)} not set): "
            f"{_LAUNCH_HINT}, export MASTER_ADDR/MASTER_PORT under srun, or unset WORLD_SIZE to run one process"
        )
    if not dist.is_available():
        raise InterpError(
            "this torch build has no torch.distributed: install a standard torch wheel to run several ranks"
        )
    timeout = datetime.timedelta(seconds=float(os.environ.get("INTERP_DIST_TIMEOUT", 86400)))
    dist.init_process_group(
        backend=os.environ.get("INTERP_DIST_BACKEND", "gloo"),
        init_method="env://",
        rank=layout.rank,
        world_size=layout.size,
        timeout=timeout,
    )
    # Tear the group down at exit: a process that exits with gloo's threads alive can abort
    # ("terminate called without an active exception"), failing a run that finished.
    import atexit

    atexit.register(_destroy_group)
    return layout


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except (RuntimeError, ValueError):  # already torn down by the caller
            pass


def _gather(obj: Any, w: World) -> list:
    import torch.distributed as dist

    if not w.distributed:
        return [obj]
    out: list = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank reaches this point (no-op in a one-process run)."""
    import torch.distributed as dist

    if world().distributed:
        dist.barrier()


@contextlib.contextmanager
def _collective(w: World) -> Iterator[None]:
    """Run a block on every rank and raise its `InterpError` on all of them.

    Without this, a rank that raises leaves the others waiting at the next collective. Other
    exceptions (bugs, Ctrl-C) propagate as they are; the launcher stops the other ranks.
    """
    error: Optional[str] = None
    try:
        yield
    except InterpError as err:
        if not w.distributed:
            raise
        error = str(err)
    if w.distributed:
        errors = _gather(error, w)
        bad = [(r, e) for r, e in enumerate(errors) if e is not None]
        if bad:
            rank, msg = bad[0]
            raise InterpError(msg if rank == w.rank or error == msg else f"rank {rank}: {msg}")


def settings_digest(obj: Any) -> str:
    """Short stable hash of JSON-able settings (what every rank must agree on)."""
    return digest(obj)


def _check_same(w: World, what: str, obj: Any) -> None:
    digests = _gather(settings_digest(obj), w)
    if len(set(digests)) > 1:
        groups = ", ".join(f"rank {r}: {d}" for r, d in enumerate(digests))
        raise InterpError(
            f"the ranks were given different {what} ({groups}): launch every rank with the same command, flags and input files"
        )

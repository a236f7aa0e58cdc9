"""Scale-out: independent units of work sharded over ranks, resumable parts, a merge on rank 0.

Every scoring command is a map over independent units of work (texts, needle samples, prompts,
batches of task items, patch chunks) followed by a cheap aggregate. This module owns the map:

- `world()` reads the rank layout the standard launchers give every process (``torchrun``,
  ``accelerate launch``: RANK / WORLD_SIZE / LOCAL_RANK; Slurm ``srun``: SLURM_PROCID /
  SLURM_STEP_NUM_TASKS / SLURM_LOCALID) and joins the ``torch.distributed`` process group
  (gloo by default: only small Python records travel, never tensors).
- `map_units(keys, compute, log=...)` gives rank r the keys ``keys[r::world_size]``, computes
  the ones no earlier run finished, appends each to the rank's own part
  (``parts/<log>.rank-RRR-of-WWW.jsonl``, a settings-stamped `SampleLog`), gathers every rank's
  records and has rank 0 append them, in key order, to the run's main log. Every rank returns
  the same complete ``{key: record}``, so the aggregate that follows is the one of a single
  process, and a later one-process run with the same folder resumes everything.
- `open_log` opens a run's main log on every rank (rank 0 alone touches the file).
- ``engine="ray"`` (`use_engine`) maps the same units over Ray actors that hold one model each
  (``pip install 'interp[ray]'``), with the same log and resume files.

Failures are collective: an `InterpError` on any rank (bad settings, a part from another run,
more ranks than units) is raised on every rank, before any result is written.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from interp.errors import InterpError

__all__ = [
    "World",
    "world",
    "map_units",
    "finished",
    "open_log",
    "open_parted_log",
    "log_add",
    "barrier",
    "settings_digest",
    "part_path",
    "use_engine",
    "current_engine",
    "configure",
    "rank_model",
    "rank_device",
    "rank_max_memory",
    "parse_max_memory",
]

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
        raise InterpError(f"WORLD_SIZE={size} is set but RANK is not, so this process has no place in a process group: {_LAUNCH_HINT}, or unset WORLD_SIZE to run one process")
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
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=layout.local_rank, local_size=layout.local_size)
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
        raise InterpError("this torch build has no torch.distributed: install a standard torch wheel to run several ranks")
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
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_same(w: World, what: str, obj: Any) -> None:
    digests = _gather(settings_digest(obj), w)
    if len(set(digests)) > 1:
        groups = ", ".join(f"rank {r}: {d}" for r, d in enumerate(digests))
        raise InterpError(
            f"the ranks were given different {what} ({groups}): launch every rank with the same command, flags and input files"
        )


# --------------------------------------------------------------------------------------------
# Logs and parts
# --------------------------------------------------------------------------------------------


def part_path(log_path: str | os.PathLike, rank: int, size: int) -> Path:
    """Where rank ``rank`` of ``size`` keeps its part of the log at ``log_path``."""
    log_path = Path(log_path)
    return log_path.parent / "parts" / f"{log_path.stem}.rank-{rank:03d}-of-{size:03d}.jsonl"


def _parts_of(log_path: Path) -> list[Path]:
    folder = log_path.parent / "parts"
    return sorted(folder.glob(f"{log_path.stem}.rank-*-of-*.jsonl")) if folder.is_dir() else []


def _read_part(path: Path, settings: dict) -> dict[str, dict]:
    """Finished records of one part file; refuses a part stamped with other settings."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        return {}
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = {}
    if head.get("settings") != settings:
        raise InterpError(
            f"{path} is a part of another run (other settings): use a new --out folder, pass --fresh, "
            "or delete that part file"
        )
    records = {}
    for ln in lines[1:]:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that unit is simply redone
        records[rec["id"]] = rec
    return records


class _ReplicaLog:
    """The main log as seen by a rank other than 0: read from disk once, updated in memory only
    (rank 0 alone appends to the file)."""

    def __init__(self, path: Path, settings: dict):
        from interp.runs import SampleLog

        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, default=str))
        self.records: dict[str, dict] = {}
        if self.path.exists() and self.path.stat().st_size:
            self.records = dict(SampleLog(self.path, settings).records)  # same settings check as rank 0

    def done(self, sample_id: str) -> bool:
        return sample_id in self.records

    def add(self, sample_id: str, record: dict) -> None:
        self.records[sample_id] = {"id": sample_id, **json.loads(json.dumps(record, default=str))}

    def __iter__(self):
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)


def open_log(path: str | os.PathLike, settings: dict, fresh: bool = False):
    """Open a run's main `interp.runs.SampleLog` on every rank.

    In a one-process run this is ``SampleLog(path, settings, fresh)``. With several ranks,
    rank 0 opens (or, with ``fresh``, clears) the file and the parts of it, then the others read
    it; every rank checks that all were given the same settings.

    Raises:
        InterpError: the folder holds a run with other settings, or the ranks disagree.
    """
    from interp.runs import SampleLog

    w = world()
    path = Path(path)
    if not w.distributed:
        if fresh:
            for part in _parts_of(path):
                part.unlink()
        return SampleLog(path, settings, fresh=fresh)
    with _collective(w):
        _check_same(w, "settings", settings)
    log = None
    with _collective(w):
        if w.main:
            if fresh:
                for part in _parts_of(path):
                    part.unlink()
            log = SampleLog(path, settings, fresh=fresh)
    with _collective(w):
        if not w.main:
            log = _ReplicaLog(path, settings)
    return log


class _RankLog:
    """A log kept in parts, for drivers that number their own records (patching logs passes):
    ``records`` holds the main log and every part (any world size), ``add`` appends to this
    rank's part (to the main log in a one-process run), its id tagged with the rank so
    that ids numbered independently by each rank never collide."""

    def __init__(self, path: Path, settings: dict, w: World):
        from interp.runs import SampleLog

        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, default=str))
        self._tag = f"@rank-{w.rank:03d}-of-{w.size:03d}" if w.distributed else ""
        if w.distributed:
            main = _ReplicaLog(self.path, settings) if self.path.exists() else None
            self._own = SampleLog(part_path(self.path, w.rank, w.size), settings)
            self.records = dict(main.records) if main is not None else {}
        else:
            self._own = SampleLog(self.path, settings)
            self.records = dict(self._own.records)
        for part in _parts_of(self.path):
            self.records.update(_read_part(part, self.settings))

    def done(self, sample_id: str) -> bool:
        return sample_id in self.records

    def add(self, sample_id: str, record: dict) -> None:
        self._own.add(sample_id + self._tag, record)
        self.records[sample_id + self._tag] = self._own.records[sample_id + self._tag]

    def __iter__(self):
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)


def open_parted_log(path: str | os.PathLike, settings: dict, fresh: bool = False):
    """Open a log that every rank appends to through its own part (see `_RankLog`): for drivers
    whose records are not one per unit key (patching stores one record per forward pass).

    Every rank reads the main log and all parts before any rank goes on, so all start from the
    same finished work. Raises like `open_log`.
    """
    from interp.runs import SampleLog

    w = world()
    path = Path(path)
    with _collective(w):
        _check_same(w, "settings", settings)
    with _collective(w):
        if w.main:
            if fresh:
                for part in _parts_of(path):
                    part.unlink()
            SampleLog(path, settings, fresh=fresh)  # creates or checks the main log's header
    log = None
    with _collective(w):
        log = _RankLog(path, settings, w)
    with _collective(w):
        pass  # every rank has read every part before any rank appends to its own
    return log


def log_add(log, key: str, record: dict) -> None:
    """Add ``record`` to ``log`` the distributed-safe way: rank 0 writes, the others remember."""
    if log is None:
        return
    if world().main or isinstance(log, _ReplicaLog):
        log.add(key, record)
    else:
        log.records[key] = {"id": key, **json.loads(json.dumps(record, default=str))}


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
        from interp import _ray  # noqa: F401  (fails early, with the install hint, when ray is missing)
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
) -> None:
    """Process-wide launch options (what the CLI's ``--engine/--workers/--device-map/--max-memory``
    set): the engine `map_units` uses and how `rank_model` places each rank's model."""
    if engine not in ("ranks", "ray"):
        raise InterpError(f"unknown --engine {engine!r}: use 'ranks' (torchrun/accelerate/srun processes) or 'ray'")
    if workers is not None and workers < 1:
        raise InterpError(f"--workers must be at least 1; got {workers}")
    if workers is not None and engine != "ray":
        raise InterpError("--workers is for --engine ray; with the launcher's ranks use torchrun --nproc-per-node N")
    if max_memory is not None and device_map is None:
        raise InterpError("--max-memory needs --device-map (e.g. --device-map auto)")
    if engine == "ray":
        from interp import _ray  # noqa: F401  (fails early, with the install hint, when ray is missing)
    _ENGINE.update(name=engine, workers=workers)
    _PLACEMENT.update(device_map=device_map, max_memory=max_memory)
    _LOADING.clear()
    if dtype is not None:
        _LOADING["dtype"] = dtype
    if attn_implementation is not None:
        _LOADING["attn_implementation"] = attn_implementation
    if model_backend is not None:
        if model_backend not in ("hf", "tl"):
            raise InterpError(f"unknown --model-backend {model_backend!r}: use hf (the HF module) or tl (a TransformerLens bridge over it)")
        _LOADING["backend"] = model_backend


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
# The map
# --------------------------------------------------------------------------------------------


def map_units(
    keys: Sequence[str],
    compute: Optional[Callable[[str], Any]] = None,
    *,
    compute_many: Optional[Callable[[list, Callable[[str, Any], None]], None]] = None,
    log=None,
    settings: Any = None,
    what: str = "units of work",
    progress: bool = True,
    idle_ok: bool = False,
    contiguous: bool = False,
) -> dict[str, Any]:
    """``{key: compute(key)}`` for every key, sharded over the ranks, resumable through ``log``.

    Rank r computes ``keys[r::size]`` (strided, so a grid sorted by cost is shared evenly; or
    one block of consecutive keys with ``contiguous``),
    skipping keys already in ``log`` or in any part of it; each record goes to the rank's part
    file as soon as it is done, so a killed rank loses only the unit it was computing. After
    every rank is done, rank 0 appends the records it does not hold yet to ``log`` in key order.

    Args:
        keys: unique unit ids, in the order of a one-process run.
        compute: key -> record (JSON-able when ``log`` is given).
        compute_many: instead of ``compute``, ``(keys, done)`` that computes this rank's
            unfinished keys together (e.g. batched over a shared prefix) and calls
            ``done(key, record)`` for each as soon as it is finished.
        log: the run's main log (`open_log` or `interp.runs.SampleLog`), or None for no files.
        settings: what every rank must agree on besides ``keys`` and ``log.settings``.
        what: name of the units in messages ("texts", "samples", ...).
        progress: progress bar on rank 0.
        idle_ok: allow more ranks than keys (surplus ranks wait); otherwise that is an error.
        contiguous: give each rank one block of consecutive keys instead of every size-th key
            (for drivers that batch neighbouring units, e.g. over a shared prefix).

    Returns:
        ``{key: record}`` for every key, in ``keys`` order, on every rank.

    Raises:
        InterpError: duplicate keys, more ranks than units, ranks with different settings, or a
            part written under other settings (on every rank, before any file is written).
    """
    from tqdm.auto import tqdm

    if (compute is None) == (compute_many is None):
        raise TypeError("map_units needs exactly one of compute and compute_many")
    if compute is None:
        compute = lambda key: _one_of_many(compute_many, key)  # noqa: E731  (Ray: one unit per call)
    keys = [str(k) for k in keys]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})[:3]
        raise InterpError(f"duplicate {what} ids {dupes}: give every unit a distinct id")
    engine, workers = current_engine()
    w = world()
    stamp = [settings, log.settings if log is not None else None]
    with _collective(w):
        _check_same(w, what, [stamp, keys])
        if w.size > len(keys) and not idle_ok:
            raise InterpError(
                f"{w.size} ranks but only {len(keys)} {what}: launch at most {len(keys)} processes, or give more work"
            )
        resumed = _resumed(log, keys)
        part = None
        if log is not None and w.distributed:
            from interp.runs import SampleLog

            part = SampleLog(part_path(log.path, w.rank, w.size), log.settings)
    if engine == "ray" and not w.distributed:
        from interp._ray import ray_map

        return ray_map(keys, compute, log=log, resumed=resumed, workers=workers, what=what, progress=progress)

    mine = _block(keys, w.rank, w.size) if contiguous else keys[w.rank :: w.size]
    records: dict[str, Any] = {}
    with _collective(w):
        for key in mine:
            if key in resumed:
                records[key] = resumed[key]
                if part is None and log is not None and not log.done(key):
                    log.add(key, records[key])  # found in a part of an earlier run: the main log gets it
        todo = [key for key in mine if key not in records]
        bar = tqdm(total=len(todo), desc=what, unit="unit", disable=not (progress and w.main and todo))

        def done(key: str, record: Any) -> None:
            records[key] = record
            if part is not None:
                part.add(key, record)
            elif log is not None:
                log.add(key, record)
            bar.update(1)

        try:
            if compute_many is not None:
                compute_many(list(todo), done)
            else:
                for key in todo:
                    done(key, compute(key))
        finally:
            bar.close()
        lost = [key for key in todo if key not in records]
        if lost:
            raise InterpError(f"{len(lost)} {what} were never finished (first: {lost[0]}): re-run the same command to resume")
    records = {key: records[key] for key in mine}
    if not w.distributed:
        return records
    merged: dict[str, Any] = {}
    for got in _gather(records, w):
        merged.update(got)
    missing = [k for k in keys if k not in merged]
    if missing:  # cannot happen unless a rank's shard went astray; never return a partial result
        raise InterpError(f"{len(missing)} {what} came back from no rank (first: {missing[0]}): re-run the same command to resume")
    if log is not None:
        for key in keys:
            if not log.done(key):
                log_add(log, key, merged[key])
    return {key: merged[key] for key in keys}


def _block(keys: Sequence[str], rank: int, size: int) -> list[str]:
    """Rank ``rank``'s block of consecutive keys; block sizes differ by at most one."""
    base, extra = divmod(len(keys), size)
    start = rank * base + min(rank, extra)
    return list(keys[start : start + base + (rank < extra)])


def _one_of_many(compute_many: Callable, key: str) -> Any:
    got: dict[str, Any] = {}
    compute_many([key], lambda k, record: got.__setitem__(k, record))
    return got[key]


def finished(log, keys: Sequence[str]) -> set[str]:
    """The ``keys`` an earlier run finished (in ``log`` or in any part of it), on any rank."""
    return set(_resumed(log, keys))


def _resumed(log, keys: Sequence[str]) -> dict[str, Any]:
    """Records of ``keys`` finished by an earlier run: in the main log or in any of its parts
    (of any world size, so a run can resume with another number of processes)."""
    if log is None:
        return {}
    wanted = set(keys)
    found = {k: log.records[k] for k in keys if log.done(k)}
    for part in _parts_of(Path(log.path)):
        for key, rec in _read_part(part, log.settings).items():
            if key in wanted and key not in found:
                found[key] = rec
    return found


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


def rank_max_memory(max_memory: Optional[dict], w: Optional[World] = None, n_gpus: Optional[int] = None) -> Optional[dict]:
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
        raise InterpError(f"--max-memory names GPU {bad[0]} but each rank owns {share} GPUs (0..{share - 1}): index GPUs within the rank")
    for k, v in given.items():
        if not isinstance(k, int):
            out[k] = v
    return out

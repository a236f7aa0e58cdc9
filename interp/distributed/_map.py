"""`map_units`: units of work sharded over ranks, resumed from logs, merged on every rank (see `interp.distributed`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from interp.distributed._logs import _parts_of, _read_part, log_add, part_path
from interp.distributed._world import _check_same, _collective, _gather, world
from interp.errors import InterpError

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
    engine: str = "ranks",
    workers: Optional[int] = None,
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
        log (SampleLog | None): the run's main log (`open_log` or `interp.runs.SampleLog`), or None for no files.
        settings: what every rank must agree on besides ``keys`` and ``log.settings``.
        what: name of the units in messages ("texts", "samples", ...).
        progress: progress bar on rank 0.
        idle_ok: allow more ranks than keys (surplus ranks wait); otherwise that is an error.
        contiguous: give each rank one block of consecutive keys instead of every size-th key
            (for drivers that batch neighbouring units, e.g. over a shared prefix).
        engine: ``"ranks"`` (the launcher's processes; one process when not launched) or
            ``"ray"`` (Ray actors, ``workers`` of them, one model each): `Launch.engine`.
        workers: with ``engine="ray"``, the number of actors (default: one per CPU or GPU).

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
        from interp.distributed._ray import ray_map

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
            raise InterpError(
                f"{len(lost)} {what} were never finished (first: {lost[0]}): re-run the same command to resume"
            )
    records = {key: records[key] for key in mine}
    if not w.distributed:
        return records
    merged: dict[str, Any] = {}
    for got in _gather(records, w):
        merged.update(got)
    missing = [k for k in keys if k not in merged]
    if missing:  # cannot happen unless a rank's shard went astray; never return a partial result
        raise InterpError(
            f"{len(missing)} {what} came back from no rank (first: {missing[0]}): re-run the same command to resume"
        )
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

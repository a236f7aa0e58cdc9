"""Resume logs kept in parts, one per rank, merged by rank 0 (see `interp.distributed`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from interp.distributed._world import World, _check_same, _collective, world
from interp.errors import InterpError

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
    """Finished records of one part file (a torn last line dropped); refuses a part holding
    records made with other settings, or a file that is no resume log."""
    from interp.runs import read_log

    found = read_log(path)
    if found.records and found.settings != settings:
        raise InterpError(
            f"{path} is a part of another run (other settings): use a new --out folder, pass --fresh, "
            "or delete that part file"
        )
    return found.records


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


def lock_run_folder(folder: str | os.PathLike):
    """Lock a run's output folder for the whole run, on behalf of every rank.

    Rank 0 takes the lock (`interp.runs.lock_folder`: the ranks of one run share a folder, a
    second run is refused) and removes temporary files a killed run left there; its error is
    raised on every rank. Returns the lock on rank 0 (release it when the run ends), else None.

    Raises:
        InterpError: another run holds the folder.
    """
    from interp.runs import clean_stale_temps, lock_folder

    w = world()
    lock = None
    with _collective(w):
        if w.main:
            lock = lock_folder(folder)
            clean_stale_temps(folder)
    return lock

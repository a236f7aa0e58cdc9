"""Run folders: one run at a time, atomic writes, resumable per-sample logs, and run metadata.

Long CLI runs write into an output folder. The folder is locked while a run writes into it
(`lock_folder`: an exclusive ``flock`` that dies with its process, so no stale lock outlives a
kill), and temporary files a killed run left behind are removed when the next run takes the lock
(`clean_stale_temps`). Every file is written atomically (to a temporary file in the same folder,
then renamed), so an interrupted run never leaves a half-written table. Per-sample results go to
an append-only JSONL log (`SampleLog`) flushed after each sample: a re-run with the same folder
and settings skips finished samples, and Ctrl-C loses none. The log's first line is its
settings stamp, written with the first finished sample, so a run refused before any work leaves
no log behind.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from interp._runmeta import add_part_time, checkout_commit, claim_folder, folder_command, part_times, strict_json
from interp.errors import InterpError
from interp.protocols import Model

__all__ = [
    "prepare_out_dir",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "SampleLog",
    "read_log",
    "LogContents",
    "lock_folder",
    "FolderLock",
    "clean_stale_temps",
    "kept_note",
    "interrupted_note",
    "forget_folders",
    "model_settings",
    "run_info",
    "claim_folder",
    "folder_command",
    "add_part_time",
    "part_times",
    "strict_json",
    "write_error",
]

_TMP_SUFFIX = ".interp-tmp"  # every temporary file of atomic_write_text ends so; clean_stale_temps finds them
_LEGACY_TMP = re.compile(r"^\..+\.(csv|json|jsonl|html|png|js)\.[a-z0-9_]{8}$")  # mkstemp names before the suffix
_LOCK_NAME = ".interp.lock"


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is a writable folder, before any long work starts.

    Raises:
        InterpError: an empty path (it would write into the current folder), a file, or a
            folder that cannot be written.
    """
    if not str(path).strip():
        raise InterpError("--out is empty: give the output folder, e.g. --out runs/mine")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InterpError(f"output folder {out} is a file: pass a folder path with --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise InterpError(f"output folder {out} is not writable ({err.strerror}): choose another --out") from err
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename).

    The temporary file is ``.<name>.<random>.interp-tmp``; one left by a killed process is
    removed by `clean_stale_temps` when the next run locks the folder.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a quota, a folder made read-only mid-run: the old file stays whole
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_error(path: Path, err: OSError) -> InterpError:
    """The one-line error of a failed write (a full disk above all): what was kept, what to do."""
    why = err.strerror or str(err)
    return InterpError(
        f"cannot write {path} ({why}): free space or choose another --out; the files already written, and "
        "every finished unit in the folder's resume logs, are kept: re-run the same command to resume"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (RFC 8259: no NaN or Infinity), atomically.

    A non-finite float becomes null; the top-level object then lists each such place under
    ``"nulls"`` (``{"summary.rate": "NaN: not measurable on this run"}``), so a reader knows
    why. ``json.dumps(allow_nan=False)`` guards that nothing non-finite slips through.
    """
    clean, nulls = strict_json(obj)
    if nulls and isinstance(clean, dict):
        clean = {**clean, "nulls": {**(clean.get("nulls") or {}), **nulls}}
    return atomic_write_text(path, json.dumps(clean, indent=2, default=str, allow_nan=False) + "\n")


def atomic_write_csv(path: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    return atomic_write_text(path, df.to_csv(index=False))


def clean_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files of atomic writes that a killed run left in ``folder`` (and its
    ``parts/``). Call only while holding the folder's lock (`lock_folder`), so no live writer's
    file is taken. Returns the names removed."""
    removed = []
    folder = Path(folder)
    for sub in (folder, folder / "parts"):
        if not sub.is_dir():
            continue
        for entry in sub.iterdir():
            name = entry.name
            if entry.is_file() and name.startswith(".") and (name.endswith(_TMP_SUFFIX) or _LEGACY_TMP.match(name)):
                entry.unlink(missing_ok=True)
                removed.append(name)
    return removed


# --------------------------------------------------------------------------------------------
# One run per folder
# --------------------------------------------------------------------------------------------


@dataclass
class FolderLock:
    """An exclusive lock on a run folder held by this process (see `lock_folder`)."""

    folder: Path
    fd: int
    users: int = 1

    def release(self) -> None:
        """Drop one user; the last one removes the lock file and unlocks."""
        self.users -= 1
        if self.users > 0 or self.fd < 0:
            return
        _HELD.pop(str(self.folder), None)
        try:
            (self.folder / _LOCK_NAME).unlink(missing_ok=True)  # while still locked: nobody else holds this inode
        except OSError:
            pass
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = -1


_HELD: dict[str, FolderLock] = {}
_LOCKED: list[Path] = []  # folders locked in this process since `interrupted_note` last looked


def lock_folder(folder: str | os.PathLike) -> Optional[FolderLock]:
    """Lock ``folder`` for this process, or raise if another process's run holds it.

    The lock is an exclusive ``flock`` on ``folder/.interp.lock`` (which holds the holder's pid),
    released by `FolderLock.release` or when the process ends however it ends, so a killed run
    never blocks the next one. In one process the lock is shared (each `lock_folder` call adds a
    user). Returns None where the platform has no ``flock``.

    Raises:
        InterpError: another process holds the lock; the message names its pid.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (Windows: no flock; runs are not guarded there)
        return None
    folder = Path(folder).resolve()
    held = _HELD.get(str(folder))
    if held is not None:
        held.users += 1
        return held
    path = folder / _LOCK_NAME
    for _ in range(20):  # the holder may unlink the file between our open and our flock: retry
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InterpError(
                f"{folder} is in use by another interp run ({_holder(path)}): wait for it to finish, "
                "or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            lock = FolderLock(folder, fd)
            _HELD[str(folder)] = lock
            _LOCKED.append(folder)
            return lock
        os.close(fd)
    raise InterpError(f"could not lock {folder}: another run keeps replacing {_LOCK_NAME}; choose another --out")


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


# --------------------------------------------------------------------------------------------
# Resume logs
# --------------------------------------------------------------------------------------------


@dataclass
class LogContents:
    """What `read_log` found in a resume log.

    Attributes:
        settings: the settings stamp (None: the file is empty, or only a torn stamp).
        records: finished records by id, in file order.
        bad_lines: lines in the middle that are not records (an older crash), skipped.
        torn: the last line was cut by a kill mid-write (dropped: that unit is redone).
        keep_bytes: length of the file up to the end of its last whole line; appending after a
            truncation to it starts on a fresh line.
        ends_open: the last whole record is not followed by a newline.
    """

    settings: Optional[dict] = None
    records: dict[str, dict] = field(default_factory=dict)
    bad_lines: int = 0
    torn: bool = False
    keep_bytes: int = 0
    ends_open: bool = False


def read_log(path: str | os.PathLike) -> LogContents:
    """Read a resume log line by line.

    Raises:
        InterpError: the file is not an interp resume log (its first line is no settings stamp).
    """
    path = Path(path)
    out = LogContents()
    if not path.exists():
        return out
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            offset += len(raw)
            whole = raw.endswith(b"\n")
            text = raw.strip()
            if not text:
                if whole:
                    out.keep_bytes = offset
                continue
            try:
                obj = json.loads(text)
            except ValueError:  # JSONDecodeError and bad UTF-8 alike
                obj = None
            if out.settings is None:
                if isinstance(obj, dict) and set(obj) == {"settings"} and isinstance(obj["settings"], dict):
                    out.settings = obj["settings"]
                    out.keep_bytes, out.ends_open = offset, not whole
                    continue
                if not whole and raw.startswith(b'{"settings"'):
                    out.torn = True  # killed while writing the stamp: an empty log
                    return out
                raise InterpError(
                    f"{path} is not an interp resume log (its first line is no settings stamp): "
                    "move it away or choose another --out"
                )
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                out.records[obj["id"]] = obj
                out.keep_bytes, out.ends_open = offset, not whole
            elif whole:
                out.bad_lines += 1
            else:
                out.torn = True
    return out


class SampleLog:
    """Append-only JSONL log of finished samples, keyed by a string id, for resumable runs.

    The first line holds the run's settings; a re-run with different settings raises instead of
    silently mixing results (the message says to use a new folder or ``--fresh``). The stamp is
    written with the first record, so opening a log (and being refused afterwards) writes
    nothing. A last line cut by a kill is dropped (reported once on stderr) and cut off before
    the next record is appended; a log that holds no record yet takes the new settings.

    Raises:
        InterpError: the file is not a resume log, or holds records made with other settings.
    """

    def __init__(self, path: str | os.PathLike, settings: dict, fresh: bool = False):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, default=str))
        found = read_log(self.path)  # before --fresh deletes anything: a foreign file is never deleted
        if fresh:
            self.path.unlink(missing_ok=True)
            found = LogContents()
        elif found.records and found.settings != self.settings:
            raise InterpError(
                f"{self.path.parent} holds a run with other settings ({_differences(found.settings or {}, self.settings)}); "
                "use a new --out folder or pass --fresh to start over"
            )
        # how the next record is written: "write" the file anew, stamp first (no record yet);
        # "repair" (cut a torn tail, end the last line) then append; or plain "append"
        if not found.records:
            self._mode = "write"
        elif found.ends_open or found.keep_bytes != self.path.stat().st_size:
            self._mode = "repair"
        else:
            self._mode = "append"
        self._keep = found.keep_bytes
        self._close_line = found.ends_open
        self.records: dict[str, dict] = dict(found.records)
        if found.torn or found.bad_lines:
            what = ["its last line was cut by a kill"] if found.torn else []
            what += [f"{found.bad_lines} unreadable line(s) skipped"] if found.bad_lines else []
            sys.stderr.write(f"note: {self.path}: {'; '.join(what)}; those units are redone\n")

    def done(self, sample_id: str) -> bool:
        return sample_id in self.records

    def add(self, sample_id: str, record: dict) -> None:
        rec = {"id": sample_id, **json.loads(json.dumps(record, default=str))}
        line = json.dumps(rec) + "\n"
        if self._mode == "write":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(self.path, "wb", buffering=0) as f:
                    data = memoryview((json.dumps({"settings": self.settings}) + "\n" + line).encode("utf-8"))
                    while data:
                        data = data[f.write(data) :]
                    os.fsync(f.fileno())
            except OSError as err:  # a full disk: a log of no whole record is no log
                self.path.unlink(missing_ok=True)
                raise write_error(self.path, err) from None
        else:
            self._append(line)
        self._mode = "append"
        self.records[sample_id] = rec

    def _append(self, line: str) -> None:
        """Append one whole line, or nothing: a write that fails part-way (a full disk) is cut
        back to where the file ended, so no torn line is left for the next run to skip."""
        with open(self.path, "r+b", buffering=0) as f:  # unbuffered: no data left to flush at close
            if self._mode == "repair":
                f.truncate(self._keep)  # the torn tail goes before anything is appended
                line = ("\n" if self._close_line else "") + line
            end = f.seek(0, os.SEEK_END)
            data = memoryview(line.encode("utf-8"))
            try:
                while data:
                    data = data[f.write(data) :]
                os.fsync(f.fileno())
            except OSError as err:
                try:
                    f.truncate(end)
                except OSError:
                    pass  # the next run drops a torn last line (read_log) all the same
                raise write_error(self.path, err) from None

    def __iter__(self) -> Iterable[dict]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)


def _differences(old: dict, new: dict) -> str:
    """``dtype: float32 -> bfloat16`` for up to three settings that differ (nested keys dotted)."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old), flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    shown = [f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}" for k in keys[:3]]
    return ", ".join(shown) + (f", and {len(keys) - 3} more" if len(keys) > 3 else "")


def interrupted_note() -> str:
    """The CLI's one line on Ctrl-C: what the run kept in the folder this process locked last
    (`kept_note`), and how to resume. Forgets the folders it looked at."""
    folder = _LOCKED[-1] if _LOCKED else None
    _LOCKED.clear()
    if folder is None:
        return "interrupted before an output folder was opened: nothing was written"
    return kept_note(folder)


def forget_folders() -> None:
    """Forget which folders this process locked (the CLI, after each command)."""
    _LOCKED.clear()


def kept_note(folder: str | os.PathLike) -> str:
    """What an interrupted run kept in ``folder``, and how to resume, in one line."""
    folder = Path(folder)
    logs = sorted(folder.glob("*.jsonl")) + sorted(folder.glob("parts/*.jsonl"))
    finished: dict[
        str, set[str]
    ] = {}  # main log name -> ids; a unit in a rank's part and in the merged log counts once
    for log in logs:
        try:
            ids = read_log(log).records
        except InterpError:
            continue
        if ids:
            finished.setdefault(log.name.split(".rank-")[0].removesuffix(".jsonl") + ".jsonl", set()).update(ids)
    kept = sum(len(ids) for ids in finished.values())
    if not kept:
        return f"interrupted before any unit of work finished: nothing kept in {folder}; re-run the command to start"
    return (
        f"interrupted: {kept} finished unit(s) of work kept in {folder} ({', '.join(sorted(finished))}); "
        "re-run the same command to resume (add --fresh to start over)"
    )


def model_settings(lm: Model, kernel_backend: Optional[str] = None) -> dict[str, Any]:
    """The settings of a loaded model that change the numbers a run computes: what a resume log
    is stamped with (beside the analysis's settings) and run.json records under ``launch``.

    Args:
        lm: the loaded model.
        kernel_backend: the ``--backend`` asked for; "auto" is recorded as the backend it picks
            on the model's device.

    Returns:
        ``{"dtype", "attn_implementation", "model_backend", "device", "device_map",
        "prepend_bos", "weights"}`` (and ``"kernel_backend"`` when given); ``device_map`` lists
        the devices a device map spread the model over (None: one device); ``weights`` is the
        content hash of the weights (`interp._identity.weights_identity`).

    Raises:
        InterpError: ``kernel_backend`` is "triton" and Triton cannot run on the model's device.
    """
    import torch

    from interp._identity import weights_identity

    hf = getattr(lm, "hf_model", None)
    placed = getattr(hf, "hf_device_map", None)  # set when loaded with a device_map
    out: dict[str, Any] = {
        "dtype": str(getattr(hf, "dtype", "unknown")).removeprefix("torch."),
        "attn_implementation": getattr(getattr(hf, "config", None), "_attn_implementation", None),
        "model_backend": lm.backend,
        "device": lm.device.type,
        "device_map": sorted({str(d) for d in placed.values()}) if placed else None,
        "prepend_bos": bool(lm.prepends_bos),
        "weights": weights_identity(lm),  # content, not name: a replaced file is another model
    }
    if kernel_backend is not None:
        from interp.kernels.stats import triton_unavailable

        reason = triton_unavailable(torch.empty(0, device=lm.device)) if kernel_backend in ("auto", "triton") else None
        if kernel_backend == "triton" and reason is not None:
            raise InterpError(f"--backend triton: {reason.replace('backend=', '--backend ')}")
        if kernel_backend == "auto":
            kernel_backend = "triton" if lm.device.type == "cuda" and reason is None else "torch"
        out["kernel_backend"] = kernel_backend
    return out


def run_info(
    lm: Optional[Model] = None, settings: dict | None = None, started: float | None = None, *, ranks: int = 1
) -> dict:
    """Metadata for run.json: model, settings, library versions, timings, and ``ranks``, the
    processes that shared the work (`interp.distributed.world`'s size, given by the caller)."""
    import numpy
    import torch
    import transformers

    import interp

    info: dict[str, Any] = {
        "interp": interp.__version__,
        "interp_commit": checkout_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if lm is not None:
        info["model"] = lm.name
        info["backend"] = lm.backend
        info["arch"] = {k: getattr(lm.arch, k) for k in ("n_layers", "n_heads", "n_kv_heads", "d_head", "n_ctx")}
        # per layer, its sliding window (None: global): what a windowed model's per-layer numbers are read against
        info["arch"]["sliding_window"] = [lm.arch.layer_attention(i).sliding_window for i in range(lm.arch.n_layers)]
        info["launch"] = model_settings(lm)
    info["ranks"] = ranks
    if settings is not None:
        info["settings"] = settings
    if started is not None:
        info["wall_seconds"] = round(time.time() - started, 2)
    return info

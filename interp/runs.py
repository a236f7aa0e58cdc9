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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from interp._runlog import LogContents, SampleLog, read_log, write_error
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

"""Run folders: atomic writes, resumable per-sample logs, and run metadata.

Long CLI runs write into an output folder. Every file is written atomically (to a temporary file
in the same folder, then renamed), so an interrupted run never leaves a half-written table.
Per-sample results go to an append-only JSONL log (`SampleLog`) flushed after each sample: a
re-run with the same folder and settings skips finished samples, and Ctrl-C loses none.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from interp.errors import InterpError
from interp.protocols import Model

__all__ = ["prepare_out_dir", "atomic_write_text", "atomic_write_json", "atomic_write_csv", "SampleLog", "run_info"]


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is a writable folder, before any long work starts."""
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
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    return atomic_write_text(path, df.to_csv(index=False))


class SampleLog:
    """Append-only JSONL log of finished samples, keyed by a string id, for resumable runs.

    The first line holds the run's settings; a re-run with different settings raises instead of
    silently mixing results (the message says to use a new folder or ``--fresh``).
    """

    def __init__(self, path: str | os.PathLike, settings: dict, fresh: bool = False):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, default=str))
        self.records: dict[str, dict] = {}
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if lines:
                head = json.loads(lines[0])
                if head.get("settings") != self.settings:
                    raise InterpError(
                        f"{self.path.parent} holds a run with other settings; use a new --out folder "
                        "or pass --fresh to start over"
                    )
                for ln in lines[1:]:
                    try:
                        rec = json.loads(ln)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash: that sample is simply redone
                    self.records[rec["id"]] = rec
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"settings": self.settings}) + "\n")

    def done(self, sample_id: str) -> bool:
        return sample_id in self.records

    def add(self, sample_id: str, record: dict) -> None:
        rec = {"id": sample_id, **json.loads(json.dumps(record, default=str))}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[sample_id] = rec

    def __iter__(self) -> Iterable[dict]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)


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
    info["ranks"] = ranks
    if settings is not None:
        info["settings"] = settings
    if started is not None:
        info["wall_seconds"] = round(time.time() - started, 2)
    return info

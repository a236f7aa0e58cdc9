"""Resume logs: the append-only JSONL log of finished units (`SampleLog`), read back by `read_log`
(see `interp.runs`, which re-exports these names).

The log's first line is its settings stamp, written with the first finished unit, so a run refused
before any work leaves no log behind; every later line is one finished unit, flushed and synced
as it is written, so Ctrl-C or a kill loses at most the unit being computed.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from interp.errors import InterpError

__all__ = ["SampleLog", "LogContents", "read_log", "write_error"]


def write_error(path: Path, err: OSError) -> InterpError:
    """The one-line error of a failed write (a full disk above all): what was kept, what to do."""
    why = err.strerror or str(err)
    return InterpError(
        f"cannot write {path} ({why}): free space or choose another --out; the files already written, and "
        "every finished unit in the folder's resume logs, are kept: re-run the same command to resume"
    )


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

"""The one digest of inputs and settings: a short sha256, stored with a run's settings.

A run records the digest of every data file and setting it depends on (run.json, the header of
its resume logs), so a re-run with an edited file or other settings is refused instead of
silently mixing results; ranks compare digests to check they were launched alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["digest"]


def digest(data: Any) -> str:
    """The first 16 hex digits of the sha256 of ``data``: bytes as they are, a str as UTF-8,
    anything else as its JSON with sorted keys (objects JSON does not know as their ``str``)."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]

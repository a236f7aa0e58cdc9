"""Plain text sets: the shipped docstring excerpts and users' texts files.

A texts file is UTF-8 with texts separated by lines holding only ``---``. The shipped set
`interp/data/sink_texts.txt` holds 32 excerpts (about 400 tokens each, 13k tokens in all) of
Python standard-library docstrings (PSF licence): prose, code, lists and indentation, so
punctuation, newline and stopword tokens all occur. Sinks, the head detectors and
AttentionInfluence read their texts from here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from interp.datasets._files import read_user_text
from interp.digest import digest
from interp.errors import InterpError

__all__ = ["TEXT_SEPARATOR", "split_texts", "read_texts", "default_texts", "texts_digest"]

TEXT_SEPARATOR = "---"  # a line holding only this separates texts in a texts file


def split_texts(raw: str) -> list[str]:
    """Texts of a texts file: blocks separated by a line holding only ``---``; empty blocks dropped."""
    blocks, current = [], []
    for line in raw.splitlines():
        if line.strip() == TEXT_SEPARATOR:
            blocks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    blocks.append("\n".join(current))
    return [b.strip("\n") for b in blocks if b.strip()]


def read_texts(path: str | Path) -> tuple[str, ...]:
    """Read a texts file (UTF-8, texts separated by lines holding only ``---``).

    Raises:
        InterpError: missing, unreadable or empty file.
    """
    p = Path(path)
    raw = read_user_text(p, "texts file", "a UTF-8 text file (texts separated by lines '---')")
    texts = split_texts(raw)
    if not texts:
        raise InterpError(f"texts file {p} is empty: put at least one text in it (texts separated by lines '---')")
    return tuple(texts)


def default_texts() -> tuple[str, ...]:
    """The shipped text set (`interp/data/sink_texts.txt`)."""
    raw = resources.files("interp").joinpath("data/sink_texts.txt").read_text(encoding="utf-8")
    return tuple(split_texts(raw))


def texts_digest(texts: Optional[Sequence[str]]) -> str:
    """A short sha256 of a text set (None = the shipped set), stored with a run's settings."""
    return digest("\x00".join(texts or default_texts()))

"""Data sets: what analyses are run on, apart from how they are scored.

Each module owns one kind of input and its file format, reads what ships in `interp/data`, and
raises `InterpError` on a bad file with the line to fix:

- `texts`: plain text sets (sinks, head detectors, AttentionInfluence).
"""

from interp.datasets.texts import TEXT_SEPARATOR, default_texts, read_texts, split_texts, texts_digest

__all__ = ["TEXT_SEPARATOR", "default_texts", "read_texts", "split_texts", "texts_digest"]

"""Document-retrieval samples: documents, a query, and the document that answers it (QRHead).

The shipped detection set `interp/data/qr_detection.jsonl` holds 16 one-sentence facts, each
the gold document among 4; a user's file has the same format, one
``{"query": str, "documents": [str, ...], "gold": int}`` object per line (errors name the
line). `build_prompt` lays a sample out as ``"Documents:\\n[1] ...\\n...\\nQuery: {query}\\n"``
and labels every token with the document it belongs to, tokenising piece by piece so span
boundaries are exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from interp.datasets._files import read_user_text
from interp.digest import digest
from interp.errors import InterpError

__all__ = ["QRSample", "read_samples", "shipped_samples", "build_prompt", "samples_digest"]


@dataclass(frozen=True)
class QRSample:
    """Documents, a query and the index of the document that answers it."""

    id: str
    query: str
    documents: tuple[str, ...]
    gold: int


def _parse(rows: Sequence[tuple[int, str]], where: str) -> tuple[QRSample, ...]:
    out = []
    for n, line in rows:
        at = f"{where} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(f"{at} is not JSON ({err.msg}): write one object per line") from err
        if not isinstance(row, dict) or not {"query", "documents", "gold"} <= set(row):
            raise InterpError(f'{at}: need an object with "query", "documents" and "gold"')
        docs = row["documents"]
        if not (isinstance(docs, list) and len(docs) >= 2 and all(isinstance(d, str) and d.strip() for d in docs)):
            raise InterpError(f"{at}: documents must be a list of at least 2 non-empty strings")
        if not (isinstance(row["query"], str) and row["query"].strip()):
            raise InterpError(f"{at}: query must be a non-empty string")
        g = row["gold"]
        if not (isinstance(g, int) and not isinstance(g, bool) and 0 <= g < len(docs)):
            raise InterpError(f"{at}: gold must be the index (0-{len(docs) - 1}) of the answering document, got {g!r}")
        out.append(QRSample(str(row.get("id", f"line-{n}")), row["query"], tuple(docs), g))
    if not out:
        raise InterpError(f"{where} has no samples: put one JSON object per line")
    return tuple(out)


def read_samples(path: str | Path) -> tuple[QRSample, ...]:
    """Samples from a JSONL file; errors name the line.

    Raises:
        InterpError: a missing file, no samples, or a bad line.
    """
    p = Path(path)
    raw = read_user_text(p, "samples file", 'a UTF-8 JSONL file of {"query", "documents", "gold"} lines')
    lines = [(n, ln) for n, ln in enumerate(raw.splitlines(), 1) if ln.strip()]
    return _parse(lines, str(p))


def shipped_samples() -> tuple[QRSample, ...]:
    """The shipped detection set (`interp/data/qr_detection.jsonl`, 16 samples of 4 documents)."""
    raw = resources.files("interp").joinpath("data/qr_detection.jsonl").read_text(encoding="utf-8")
    return _parse([(n, ln) for n, ln in enumerate(raw.splitlines(), 1) if ln.strip()], "qr_detection.jsonl")


def build_prompt(
    tokenizer: Any, documents: Sequence[str], query: str, *, bos: Optional[int] = None
) -> tuple[list[int], list[int], list[int]]:
    """Token ids of "Documents:\\n[1] ...\\n...\\nQuery: {query}\\n", with the spans labelled.

    Args:
        tokenizer: called as ``tokenizer(text, add_special_tokens=False).input_ids`` per piece.
        bos: the token the prompt opens with (`LoadedModel.bos_id`: the model's BOS where it
            prepends one; None: none), labelled -1 like the other non-document tokens.

    Returns:
        (ids, segment label per token: document index or -1, query row indices).
    """

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    ids = ([bos] if bos is not None else []) + enc("Documents:\n")
    seg = [-1] * len(ids)
    for c, doc in enumerate(documents):
        label = enc(f"[{c + 1}] ")
        body = enc(f"{doc}\n")
        ids += label + body
        seg += [-1] * len(label) + [c] * len(body)
    pre = enc("\nQuery: ")
    ids += pre
    seg += [-1] * len(pre)
    q = enc(query)
    rows = list(range(len(ids), len(ids) + len(q)))
    ids += q
    seg += [-1] * len(q)
    tail = enc("\n")
    ids += tail
    seg += [-1] * len(tail)
    return ids, seg, rows


def samples_digest(samples: Sequence[QRSample]) -> str:
    """A short sha256 of a sample set, stored with a run's settings (resume checks it)."""
    text = "\x00".join(json.dumps([s.id, s.query, list(s.documents), s.gold]) for s in samples)
    return digest(text)

"""Haystack text for needle-in-a-haystack prompts: the default stdlib docstrings or the user's files.

The default haystack is English prose present on every machine that runs the toolkit: the
documentation strings of a fixed list of Python standard-library modules, collected in a
fixed order and cleaned into plain sentences (code, lists, doctests and sentences with
internal periods are dropped). Users pass their own text files instead (``--haystack``).
`Haystack` holds the sentences with their token ids, which `interp.datasets.needles` fills
prompts from.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from interp.digest import digest
from interp.errors import InterpError

__all__ = ["Haystack", "STDLIB_MODULES", "stdlib_sentences", "read_haystack", "load_haystack", "split_sentences"]

# Modules whose docstrings make the default haystack (pure-Python modules shipped with every
# CPython build); the order is part of the haystack's definition.
STDLIB_MODULES = (
    "collections",
    "functools",
    "itertools",
    "json",
    "pathlib",
    "argparse",
    "logging",
    "threading",
    "subprocess",
    "unittest",
    "csv",
    "datetime",
    "decimal",
    "fractions",
    "random",
    "statistics",
    "heapq",
    "bisect",
    "dataclasses",
    "typing",
    "inspect",
    "pickle",
    "shutil",
    "tempfile",
    "zipfile",
    "tarfile",
    "asyncio",
    "email",
    "textwrap",
    "string",
    "difflib",
    "enum",
    "contextlib",
    "configparser",
    "queue",
    "socket",
    "http.client",
    "urllib.request",
    "urllib.parse",
    "ipaddress",
    "uuid",
    "mailbox",
    "smtplib",
    "multiprocessing",
    "pydoc",
    "os",
    "re",
)

_SENTENCE_OK = re.compile(r"[A-Z][A-Za-z0-9 ,;:'\"()\-]*[a-z0-9)]\.")
_CODE_LINE = re.compile(r"^(\s|>>>|\.\.\.|[-*+|:#]|\d+[.)]\s)")


def split_sentences(text: str) -> list[str]:
    """Plain sentence split: at . ! ? followed by whitespace; whitespace normalised."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        out.extend(s for s in re.split(r"(?<=[.!?])\s+", flat) if s)
    return out


def _docstrings(module_name: str) -> list[str]:
    """Docstrings of a module, its public classes/functions and their methods, in name order."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # e.g. a stripped-down Python build; the haystack is then shorter
        return []
    docs = [inspect.getdoc(module) or ""]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            docs.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            for mname, member in sorted(vars(obj).items()):
                if not mname.startswith("_") and inspect.isfunction(member):
                    docs.append(inspect.getdoc(member) or "")
    return docs


def _prose_sentences(doc: str) -> list[str]:
    """Keep only plain prose: paragraphs without code/list lines, sentences without markup."""
    out = []
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = paragraph.splitlines()
        if not lines or any(_CODE_LINE.match(line) for line in lines):
            continue
        for sentence in split_sentences(paragraph):
            if _SENTENCE_OK.fullmatch(sentence) and 6 <= len(sentence.split()) <= 60:
                out.append(sentence)
    return out


@lru_cache(maxsize=1)
def stdlib_sentences() -> tuple[str, ...]:
    """The default haystack: prose sentences of `STDLIB_MODULES` docstrings, deduplicated.

    Deterministic for a given Python version (docstrings change between versions; run.json
    records the haystack's hash).
    """
    seen: set[str] = set()
    out: list[str] = []
    for module_name in STDLIB_MODULES:
        for doc in _docstrings(module_name):
            for sentence in _prose_sentences(doc):
                if sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    return tuple(out)


def read_haystack(files: Sequence[str | Path]) -> tuple[str, ...]:
    """Sentences of the user's haystack files, in the order given.

    Raises:
        InterpError: a file that cannot be read as UTF-8 text, or no sentence in any file.
    """
    sentences: list[str] = []
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InterpError(
                f"cannot read haystack file {f} ({err}): pass readable UTF-8 text files with --haystack"
            ) from err
        sentences.extend(split_sentences(text))
    if not sentences:
        raise InterpError(f"the haystack files {[str(f) for f in files]} hold no text: give files with prose in them")
    return tuple(sentences)


def load_haystack(files: Sequence[str | Path] = ()) -> tuple[tuple[str, ...], str]:
    """(sentences, name) of the haystack: the user's files (`read_haystack`), or with none the
    default stdlib docstrings (`stdlib_sentences`).

    Raises:
        InterpError: an unreadable file, or no sentence at all.
    """
    if files:
        sentences, name = read_haystack(files), ", ".join(str(f) for f in files)
    else:
        sentences, name = stdlib_sentences(), "Python standard-library docstrings"
    if not sentences:
        raise InterpError("the haystack is empty: give text with --haystack")
    return sentences, name


@dataclass(frozen=True)
class Haystack:
    """Haystack sentences with the token ids of each (tokenised as " " + sentence).

    Attributes:
        sentences: the sentences in order.
        ids: token ids per sentence.
        name: where the text came from ("stdlib docstrings" or the file names).
    """

    sentences: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]
    name: str

    @classmethod
    def tokenize(
        cls, sentences: Sequence[str], encode_many: Callable[[list[str]], list[list[int]]], name: str
    ) -> Haystack:
        if not sentences:
            raise InterpError("the haystack is empty: give text with --haystack (or use the default)")
        ids = encode_many([" " + s for s in sentences])
        return cls(tuple(sentences), tuple(tuple(i) for i in ids), name)

    @property
    def n_tokens(self) -> int:
        return sum(len(i) for i in self.ids)

    def digest(self) -> str:
        """Short hash of the text (for run.json and resume checks)."""
        return digest("\n".join(self.sentences))

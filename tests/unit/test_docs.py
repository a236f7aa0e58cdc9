"""Every document the code, tests, README and docs cite exists, and so does every cited section.

A citation is a path ending in ``.md`` (``docs/METRICS.md``, ``benchmarks/RESULTS.md``), with an
optional ``#anchor``. Paths with a folder resolve from the repository root, or, for links inside
a Markdown file of docs/, from that file's folder (how mkdocs and GitHub resolve them). A bare
name (``RESULTS.md``) must name a document at the root, in docs/ or in benchmarks/. An anchor
must be the slug of a heading of the cited file (Python-Markdown's, which mkdocs uses).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[2]
DOC_DIRS = ("", "docs", "benchmarks")
CITATION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)(#[\w-]+)?(?![\w])")
MD_LINK = re.compile(r"\]\(([^)\s]+\.md)(#[\w-]+)?\)")


def sources(root: Path) -> list[Path]:
    """The files whose citations are checked: code, tests, benchmarks, scripts, README, docs, Makefile."""
    files = [root / "README.md", root / "Makefile", root / "mkdocs.yml", root / "notebooks" / "_build.py"]
    for folder, pattern in (
        ("interp", "*.py"),
        ("tests", "*.py"),
        ("benchmarks", "*.py"),
        ("scripts", "*"),
        ("docs", "*.md"),
    ):
        files += sorted(p for p in (root / folder).rglob(pattern) if p.is_file())
    this = Path(__file__).resolve()  # its own examples cite made-up documents on purpose
    return [p for p in files if p.exists() and p.resolve() != this]


def slug(heading: str) -> str:
    """The toc anchor mkdocs gives a heading: Python-Markdown's slug of its text (code spans and
    links reduced to their text)."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return slugify(text, "-")


def anchors(doc: Path) -> set[str]:
    """Slugs of every Markdown heading of ``doc`` (fenced code blocks skipped)."""
    out, fenced = set(), False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            out.add(slug(m.group(1)))
    return out


def resolve(root: Path, source: Path, path: str, md_link: bool) -> Path | None:
    """The file a citation names, or None when there is none."""
    if md_link or source.name == "mkdocs.yml":  # relative to the linking file (mkdocs' nav: to docs/)
        target = ((root / "docs" if source.name == "mkdocs.yml" else source.parent) / path).resolve()
        return target if target.is_file() else None
    if "/" in path:
        target = root / path
        return target if target.is_file() else None
    return next((root / d / path for d in DOC_DIRS if (root / d / path).is_file()), None)


def broken_citations(root: Path) -> list[str]:
    """'file:line: citation (why)' for every citation that names no file or no section."""
    problems = []
    for source in sources(root):
        for n, line in enumerate(source.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            links = [(m, True) for m in MD_LINK.finditer(line)] if source.suffix == ".md" else []
            linked = {m.start(1) for m, _ in links}
            found = links + [(m, False) for m in CITATION.finditer(line) if m.start(1) not in linked]
            for m, md_link in found:
                path, anchor = m.group(1), m.group(2)
                if path.startswith(("http", "www.")) or "*" in path:
                    continue
                where = f"{source.relative_to(root)}:{n}: {path}{anchor or ''}"
                target = resolve(root, source, path, md_link)
                if target is None:
                    problems.append(f"{where} (no such file)")
                elif anchor and anchor[1:] not in anchors(target):
                    problems.append(f"{where} (no heading with that anchor in {target.relative_to(root)})")
    return problems


def test_every_cited_document_and_section_exists() -> None:
    assert broken_citations(ROOT) == []


def test_the_checker_finds_a_missing_file_and_a_missing_section(tmp_path: Path) -> None:
    """The check itself can fail: a missing document and a missing section are both reported."""
    (tmp_path / "interp").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "METRICS.md").write_text("# Metrics\n\n## Row statistics\n", encoding="utf-8")
    (tmp_path / "interp" / "a.py").write_text(
        '"""See docs/METRICS.md#row-statistics, docs/METRICS.md#column-statistics and NOTES.md."""\n', encoding="utf-8"
    )
    (tmp_path / "README.md").write_text("[metrics](docs/METRICS.md#metrics), [gone](docs/GONE.md)\n", encoding="utf-8")
    assert broken_citations(tmp_path) == [
        "README.md:1: docs/GONE.md (no such file)",
        "interp/a.py:1: docs/METRICS.md#column-statistics (no heading with that anchor in docs/METRICS.md)",
        "interp/a.py:1: NOTES.md (no such file)",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Preplan and anchor tokens", "preplan-and-anchor-tokens"),
        ("Calibration: ACT and ZeroTuning", "calibration-act-and-zerotuning"),
        ("`interp.kernels`", "interpkernels"),
    ],
)
def test_slug_is_the_anchor_mkdocs_writes(heading: str, expected: str) -> None:
    assert slug(heading) == expected  # e.g. mkdocs renders "# `interp.kernels`" with id="interpkernels"

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
    """The files whose citations are checked: code, notebooks, tests, benchmarks, scripts, README, docs, Makefile."""
    files = [root / "README.md", root / "Makefile", root / "mkdocs.yml"]
    for folder, pattern in (
        ("interp", "*.py"),
        ("notebooks", "*.py"),
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


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def notebook_cells(path: Path) -> list[tuple[str, str]]:
    """(kind, text) of each cell of a jupytext percent file: kind "markdown" or "code"."""
    cells, kind, lines = [], None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip()))
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(
                line[2:]
                if kind == "markdown" and line.startswith("# ")
                else line.rstrip("#")
                if kind == "markdown"
                else line
            )
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip()))
    return cells


def test_every_notebook_is_in_the_docs_nav() -> None:
    """mkdocs.yml renders every notebook (executed into docs/notebooks/) and names no other."""
    nav = set(re.findall(r"notebooks/(\d\d_\w+)\.ipynb", (ROOT / "mkdocs.yml").read_text(encoding="utf-8")))
    assert nav == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_a_tutorial(path: Path) -> None:
    """A title first, text between the code (at least one markdown cell per two code cells), and a
    last cell that points to the next notebook by its file name."""
    cells = notebook_cells(path)
    assert cells and cells[0][0] == "markdown" and cells[0][1].startswith("# "), f"{path.name}: no title cell"
    n_md = sum(kind == "markdown" for kind, _ in cells)
    assert n_md >= 4 and 2 * n_md >= len(cells) - n_md, (
        f"{path.name}: {n_md} markdown cells for {len(cells) - n_md} code"
    )
    later = NOTEBOOKS[NOTEBOOKS.index(path) + 1 :]
    if later:
        assert cells[-1][0] == "markdown" and f"notebooks/{later[0].name}" in cells[-1][1], (
            f"{path.name}: the last cell should point to notebooks/{later[0].name}"
        )


def test_notebook_cells_are_read_as_jupytext_does(tmp_path: Path) -> None:
    """The cell reader above agrees with jupytext on a small percent file."""
    jupytext = pytest.importorskip("jupytext")
    nb = tmp_path / "01_x.py"
    nb.write_text("# %% [markdown]\n# # Title\n#\n# Text.\n\n# %%\nx = 1\nx\n", encoding="utf-8")
    theirs = [(c.cell_type, c.source.strip()) for c in jupytext.read(nb, fmt="py:percent").cells]
    assert notebook_cells(nb) == theirs == [("markdown", "# Title\n\nText."), ("code", "x = 1\nx")]


# the modules the API pages render (docs/api/*.md): the package itself, models, errors, and these
# subpackages with every public submodule; mkdocstrings' filters skip names starting with "_"
API_PACKAGES = ("kernels", "hooks", "analyses", "experiments", "datasets", "plots", "distributed")
# Markdown's [text][id] with an identifier for id, which mkdocs-autorefs looks up: such text goes in a code span
REFERENCE_LINK = re.compile(r"\[[^\]\n]+\]\[[A-Za-z_][\w.]*\]")


def docstring_warnings(root: Path, package: str = "interp") -> list[str]:
    """The warnings griffe gives while parsing the Google-style docstrings the API pages render
    (the ones `mkdocs build --strict` fails on), as 'path:line: message'."""
    import logging

    griffe = pytest.importorskip("griffe")
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    logger = logging.getLogger("griffe")
    handler, level = Collect(level=logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        loaded = griffe.load(package, search_paths=[str(root)], docstring_parser="google", resolve_aliases=False)

        def parse(obj, rendered: bool) -> None:
            if rendered and obj.docstring is not None:
                obj.docstring.parsed  # noqa: B018 (parsing is what warns)
                prose = re.sub(r"``.*?``|`[^`\n]*`", "", obj.docstring.value, flags=re.S)  # code spans are not links
                for link in REFERENCE_LINK.findall(prose):  # mkdocs-autorefs looks up [text][id] and warns
                    found.append(
                        f"{obj.docstring.parent.filepath}:{obj.docstring.lineno}: {link} reads as a reference link"
                    )
            for name, member in obj.members.items():
                if member.is_alias or name.startswith("_"):
                    continue
                if member.is_module:
                    inside = member.path.split(".")[1] in API_PACKAGES or member.name in ("models", "errors")
                    parse(member, inside)
                else:
                    parse(member, rendered)

        parse(loaded, True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return found


def test_api_docstrings_parse_without_warnings() -> None:
    """What `mkdocs build --strict` would fail on, found in seconds: e.g. 'clean, corrupt: ...' under
    Args (one entry must name one parameter) or an untyped parameter with no type in its entry."""
    assert docstring_warnings(ROOT) == []


def test_docstring_check_finds_a_bad_entry(tmp_path: Path) -> None:
    """The check can fail: two parameters in one Args entry, and [a][b] outside a code span, are reported."""
    (tmp_path / "fakepkg" / "kernels").mkdir(parents=True)
    (tmp_path / "fakepkg" / "__init__.py").write_text('"""Pkg."""\n', encoding="utf-8")
    (tmp_path / "fakepkg" / "kernels" / "__init__.py").write_text(
        '"""Kernels."""\n\n\ndef f(a: int, b: int) -> int:\n    """Add.\n\n    Args:\n        a, b: numbers.\n    """\n'
        '    return a + b\n\n\ndef g() -> list:\n    """Lists of [layer][head]; ``[a][b]`` is code."""\n    return []\n',
        encoding="utf-8",
    )
    warnings = docstring_warnings(tmp_path, "fakepkg")
    assert any("'a, b' does not appear in the function signature" in w for w in warnings), warnings
    assert [w for w in warnings if "reference link" in w] == [
        f"{tmp_path / 'fakepkg' / 'kernels' / '__init__.py'}:14: [layer][head] reads as a reference link"
    ]

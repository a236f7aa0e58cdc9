"""Execute the tutorial notebooks from their jupytext sources into docs/notebooks/ (gitignored).

The notebooks are written as jupytext percent files, ``notebooks/NN_name.py``: plain Python that
ruff lints and formats, with ``# %% [markdown]`` cells for the text. This script reads each one,
executes it top to bottom in a kernel of this interpreter and writes ``docs/notebooks/NN_name.ipynb``
with its outputs. The docs site renders those (mkdocs-jupyter, no execution of its own) and
tests/acceptance/test_notebooks.py checks their outputs, so every notebook runs once per
``make test``.

A notebook is executed again only when its source or the ``interp`` package changed since it was
last built (both hashes are stored in the notebook's metadata); ``--force`` executes every one.

Run: ``python scripts/build_notebooks.py [NAME ...] [--out DIR] [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import plotly
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"
KERNEL = "interp-notebooks"
TIMEOUT = 1800  # seconds per cell: the slowest takes under a minute on 2 idle cores, 10 on a loaded machine
# the kernel's environment, under the caller's own settings: plotly's figures as their JSON and as HTML that
# loads plotly.js from its CDN (rewritten below to a local copy for the docs); no progress bars (noise)
KERNEL_ENV = {"PLOTLY_RENDERER": "plotly_mimetype+notebook_connected", "TQDM_DISABLE": "1"}
PLOTLY_JS = "plotly.min.js"  # plotly's own copy, written next to the executed notebooks for the docs


class NotebookFailed(RuntimeError):
    """A notebook raised in one of its cells (the message names every one that did)."""


def sources(names: list[str] | None = None) -> list[Path]:
    """The notebook sources ``notebooks/NN_*.py``, all or those named (``06`` or ``06_from_transformerlens``)."""
    found = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if not names:
        return found
    chosen = [p for p in found if any(p.stem == n or p.stem.startswith(f"{n}_") for n in names)]
    missing = [n for n in names if not any(p.stem == n or p.stem.startswith(f"{n}_") for p in found)]
    if missing:
        raise SystemExit(f"error: no notebook {missing[0]!r} in notebooks/ (have {', '.join(p.stem for p in found)})")
    return chosen


def package_hash() -> str:
    """sha256 over the interp package's Python sources (a change re-executes every notebook)."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "interp").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def stamp(source: Path, package: str) -> dict[str, str]:
    """What an executed notebook was built from: its source's and the package's hashes."""
    return {"source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "package_sha256": package}


def up_to_date(source: Path, target: Path, package: str) -> bool:
    """Whether ``target`` was executed from this ``source`` and this package."""
    import nbformat

    if not target.is_file():
        return False
    built = nbformat.read(target, as_version=4).metadata.get("interp_build", {})
    return {k: built.get(k) for k in ("source_sha256", "package_sha256")} == stamp(source, package)


def _kernelspec(prefix: Path) -> None:
    """Install a kernelspec named KERNEL that runs this interpreter, found through JUPYTER_PATH."""
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL],
        check=True,
        capture_output=True,
        text=True,
    )
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(prefix / "share" / "jupyter")] + ([os.environ["JUPYTER_PATH"]] if os.environ.get("JUPYTER_PATH") else [])
    )


def execute(source: Path, target: Path, package: str, workdir: Path) -> tuple[float, float]:
    """Read ``source``, run every cell in the KERNEL kernel, write ``target``.

    Returns:
        (wall seconds, CPU seconds of the kernel process: user + system, counted when it exits).
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives the same cells
        cell.id = f"{source.stem.replace('_', '-')}-{i:02d}"
    start, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=TIMEOUT, allow_errors=False, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(
        env=KERNEL_ENV | dict(os.environ)
    )  # raises CellExecutionError (the cell, its traceback) on the first failing cell
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel has exited and been waited for
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [_local_plotly(o) for o in map(_without_progress, cell.outputs) if o is not None]
    nb.metadata["interp_build"] = {**stamp(source, package), "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)}
    nbformat.validate(nb)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)
    return seconds, cpu


def build(names: list[str] | None = None, out: Path = OUT, force: bool = False, echo=print) -> list[Path]:
    """Execute every notebook (or those named) whose executed copy in ``out`` is missing or stale.

    Returns:
        The executed notebooks' paths, in order.
    """
    package = package_hash()
    todo = sources(names)
    stale = [s for s in todo if force or not up_to_date(s, out / f"{s.stem}.ipynb", package)]
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / PLOTLY_JS, out / PLOTLY_JS)
    total, total_cpu, failed = 0.0, 0.0, []
    if stale:
        with tempfile.TemporaryDirectory(prefix="interp-nb-") as tmp:
            old = os.environ.get("JUPYTER_PATH")
            _kernelspec(Path(tmp) / "kernel")
            try:
                for source in stale:
                    try:
                        seconds, cpu = execute(source, out / f"{source.stem}.ipynb", package, Path(tmp))
                    except (CellExecutionError, CellTimeoutError) as err:
                        failed.append(source.stem)
                        echo(f"{source.stem}: FAILED\n{_tail(str(err))}")
                        continue
                    total += seconds
                    total_cpu += cpu
                    echo(f"{source.stem}: {seconds:.1f} s wall, {cpu:.1f} s CPU")
            finally:
                if old is None:
                    os.environ.pop("JUPYTER_PATH", None)
                else:
                    os.environ["JUPYTER_PATH"] = old
    load = os.getloadavg()[0]
    echo(
        f"{len(stale) - len(failed)} executed, {len(todo) - len(stale)} up to date "
        f"({total:.1f} s wall, {total_cpu:.1f} s CPU, load average {load:.1f}) -> {out}"
    )
    if failed:
        raise NotebookFailed(f"{len(failed)} notebook(s) failed: {', '.join(failed)}")
    return [out / f"{s.stem}.ipynb" for s in todo]


# progress bars (tqdm, on stderr) and tqdm's note that Jupyter widgets are missing: noise in a rendered page
_PROGRESS = re.compile(r"\d+%\||\d+/\d+ \[|TqdmWarning: IProgress not found|from \.autonotebook import tqdm")


def _without_progress(output):
    """``output`` without its progress-bar lines; None when nothing else is left."""
    if output.output_type != "stream" or output.name != "stderr":
        return output
    lines = [line for line in re.split(r"[\r\n]", output.text) if line.strip() and not _PROGRESS.search(line)]
    if not lines:
        return None
    output.text = "\n".join(lines) + "\n"
    return output


# plotly.js from the CDN, as the kernel's renderer writes it: the docs load plotly's own copy instead
_CDN = re.compile(
    r'(?:src="https://cdn\.plot\.ly/plotly-[\d.]+\.min\.js"(?: integrity="[^"]*")?(?: crossorigin="anonymous")?)'
    r'|(?:import "https://cdn\.plot\.ly/plotly-[\d.]+\.min(?:\.js)?")'
)


def _local_plotly(output):
    """``output`` with plotly.js loaded from ``../plotly.min.js`` (next to the rendered pages), not the CDN,
    so the docs' figures draw with no network."""
    html = output.get("data", {}).get("text/html")
    if isinstance(html, str) and "cdn.plot.ly" in html:
        output.data["text/html"] = _CDN.sub(
            lambda m: f'import "../{PLOTLY_JS}"' if m.group(0).startswith("import") else f'src="../{PLOTLY_JS}"', html
        )
    return output


def _tail(message: str, lines: int = 25) -> str:
    """The last lines of a cell's error, without the terminal colour codes."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", message).rstrip().splitlines()
    return "\n".join(plain[-lines:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to build (e.g. 00 or 00_quickstart); default: all")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="folder for the executed .ipynb (default: docs/notebooks)"
    )
    parser.add_argument("--force", action="store_true", help="execute even the notebooks that are up to date")
    args = parser.parse_args()
    try:
        build(args.names, args.out.resolve(), args.force)
    except NotebookFailed as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()

"""Every notebook in notebooks/ runs top to bottom on the embedded model, with no error, and shows
what it is written to show (its figures, printed lines and table columns).

Executed with nbclient in a kernel of this interpreter (the venv's python): an ipykernel
kernelspec is installed into a temporary prefix and put on JUPYTER_PATH, so nothing outside the
test's temporary folder is touched. The committed notebooks must be exactly what
notebooks/_build.py writes, without outputs.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
KERNEL = "interp-test-venv"


def _builder():
    spec = importlib.util.spec_from_file_location("_nb_build", NB_DIR / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """A kernelspec named KERNEL that runs this interpreter, found through JUPYTER_PATH."""
    prefix = tmp_path_factory.mktemp("jupyter")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL],
        check=True,
        capture_output=True,
        text=True,
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(prefix / "share" / "jupyter")] + ([old] if old else []))
    try:
        yield KERNEL
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def test_notebooks_are_built_from_the_script_without_outputs(tmp_path):
    import nbformat

    built = sorted(p.name for p in _builder().build(tmp_path))
    assert built == NOTEBOOKS, "notebooks/ differs from notebooks/_build.py: run python notebooks/_build.py"
    assert {
        "00_quickstart.ipynb",
        "01_retrieval.ipynb",
        "02_sinks.ipynb",
        "03_patching.ipynb",
        "04_preplan.ipynb",
    } <= set(built)
    for name in built:
        assert (tmp_path / name).read_text() == (NB_DIR / name).read_text(), (
            f"{name} is stale: run python notebooks/_build.py"
        )
        nb = nbformat.read(NB_DIR / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name} has committed outputs"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, venv_kernel, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = NotebookClient(
        nb, kernel_name=venv_kernel, timeout=600, resources={"metadata": {"path": str(tmp_path)}}, allow_errors=False
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    for cell in code:  # a cell ending in an expression shows it; print() writes a line
        shown = _shows(cell)
        assert shown is None or shown, f"{name}: cell {cell.id} shows nothing:\n{cell.source}"
    figures = sum(_is_figure(o) for c in code for o in c.outputs)
    assert figures == FIGURES[name], f"{name}: {figures} plotly figures, expected {FIGURES[name]}"
    text = "\n".join(_text(o) for c in code for o in c.outputs)
    for pattern in EXPECTED[name]:
        assert re.search(pattern, text), f"{name}: no output matches {pattern!r}"


# what each notebook must show (the figures drawn, and lines or table columns its cells produce)
FIGURES = {
    "00_quickstart.ipynb": 2,  # head_grid, attention_view
    "01_retrieval.ipynb": 2,  # retrieval figure, attention_view
    "02_sinks.ipynb": 2,  # first_token_mass_grid, layer_sink_rates
    "03_patching.ipynb": 2,  # head_out patch, resid_pre attribution by position
    "04_preplan.ipynb": 3,  # waad, fai, span
    "05_heads.ipynb": 4,  # detectors, select-copy, QRHead, AttentionInfluence
}
EXPECTED = {
    "00_quickstart.ipynb": [r"\('[^']*', 0\.\d+\)", r"sinks\.html \d+ KiB"],
    "01_retrieval.ipynb": [r"\d+\.\d% of heads score > 0\.1 over \d+ counted samples", r"\brank\b", r"\bscore\b"],
    "02_sinks.ipynb": [
        r"sink rate at position 0: \d+\.\d% of \(text, layer, head\)",
        r"alpha0",
        r"sink_rate_pct",
        r"enrichment",
        r"'previous-token': \d+",
    ],
    "03_patching.ipynb": [r"Baseline\(n=2, clean_accuracy=", r"\(2[234], \d+, "],
    "04_preplan.ipynb": [r"'n_preplan': \d+", r"'n_anchor': \d+", r"\bwaad\b", r'class="tok (anchor|both)\b'],
    "05_heads.ipynb": [r"'induction': \[\(\d+, \d+, ", r"qr_score", r"\bai\b|influence"],
}


def _shows(cell) -> bool | None:
    """Whether a cell shows its result: None when its last statement is not an expression."""
    tree = ast.parse(cell.source)
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr):
        return None
    if isinstance(last.value, ast.Call) and getattr(last.value.func, "id", None) == "print":
        return any(o.output_type == "stream" and o.text.strip() for o in cell.outputs)
    return any(o.output_type in ("execute_result", "display_data") for o in cell.outputs)


def _is_figure(output) -> bool:
    data = output.get("data", {})
    return "application/vnd.plotly.v1+json" in data or "plotly" in str(data.get("text/html", ""))[:5000].lower()


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    data = output.get("data", {})
    return "\n".join(str(data[k]) for k in ("text/plain", "text/html") if k in data)

"""Every notebook in notebooks/ runs top to bottom on the embedded model, with no error.

Executed with nbclient in a kernel of this interpreter (the venv's python): an ipykernel
kernelspec is installed into a temporary prefix and put on JUPYTER_PATH, so nothing outside the
test's temporary folder is touched. The committed notebooks must be exactly what
notebooks/_build.py writes, without outputs.
"""

from __future__ import annotations

import importlib.util
import os
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
    assert {"00_quickstart.ipynb", "01_retrieval.ipynb", "02_sinks.ipynb", "03_patching.ipynb", "04_preplan.ipynb"} <= set(built)
    for name in built:
        assert (tmp_path / name).read_text() == (NB_DIR / name).read_text(), f"{name} is stale: run python notebooks/_build.py"
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
    # every notebook ends by showing something: a figure, a table or text
    last = code[-1].outputs
    assert any(o.output_type in ("display_data", "execute_result", "stream") for o in last), f"{name}: last cell showed nothing"

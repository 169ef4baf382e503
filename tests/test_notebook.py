"""notebooks/lab4.ipynb: executed headless (nbclient, a kernel of this interpreter from the test
extras, in a kernel of this interpreter: notebooks/build.py's ``execute``) in a temporary copy, so the committed outputs stay as they are; any cell error fails,
and so does a cell tagged ``figure`` that shows no image."""
import copy
import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extras (pip install -e '.[test]')")
pytest.importorskip("nbclient", reason="the test extras (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the test extras (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "lab4.ipynb"


def _build_module():
    spec = importlib.util.spec_from_file_location("lab4_build", ROOT / "notebooks" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def _figure_cells(nb):
    return [c for c in nb.cells if "figure" in c.get("metadata", {}).get("tags", [])]


def test_committed_notebook_is_current_and_has_its_figures():
    committed = nbformat.read(NOTEBOOK, as_version=4)
    fresh = _build_module().build()
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], \
        "notebooks/lab4.ipynb is stale: run python notebooks/build.py"
    figures = _figure_cells(committed)
    assert len(figures) >= 10
    assert all(_images(c) for c in figures), "a figure cell of the committed notebook has no image"
    assert not any(o.get("output_type") == "error" for c in committed.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # run from nothing: the committed outputs must not count
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    run = copy.deepcopy(nb)
    _build_module().execute(run, tmp_path, timeout=300)  # in a kernel of this interpreter
    errors = [o for c in run.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    empty = [c.source.splitlines()[0] for c in _figure_cells(run) if not _images(c)]
    assert not empty, f"figure cells without an image: {empty}"

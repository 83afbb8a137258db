"""Every notebook under examples/notebooks runs top to bottom on CPU (nbclient), so the examples never rot."""

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbclient, nbformat, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbclient, nbformat, ipykernel)")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "examples" / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "examples/notebooks/*.ipynb not found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name}: commit notebooks with outputs cleared"
    # a kernel spec for this very interpreter, so a system-wide "python3" kernel cannot be picked up instead
    spec = tmp_path / "jupyter" / "kernels" / "interp-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "interp tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the kernel inherits this environment
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    t0 = time.time()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="interp-tests",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    print(f"{path.name}: {time.time() - t0:.0f}s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert html, "no rich output at all: figures and tables should display inline"

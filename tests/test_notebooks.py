"""Every notebook under examples/notebooks runs top to bottom on CPU (nbclient), so the examples never rot."""

import json
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbclient, nbformat, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbclient, nbformat, ipykernel)")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "examples" / "notebooks").glob("*.ipynb"))

# What each notebook's prose relies on, as regular expressions over its printed and displayed text (the toy models'
# known heads and circuit, and the SmolLM2 results the markdown names), and the titles of the plotly figures it must
# draw (one per analysis).
EXPECTED_TEXT = {"tour.ipynb": [
    r"strongest induction heads: L18H6",
    r"strongest previous-token heads: L16H0",
    r"top-4 retrieval +L1H\d L1H\d L1H\d L1H\d +0\.0",
    *(rf"{m} +top head L0H3" for m in ("ablation_zero", "ablation_mean", "ablation_resample", "mask_gradient")),
    r"dla +top head L1H\d",
    r"dla +L23H3 ",
    r"mask-gradient order +heads removable at 5 %: [1-9]\d* of 270",
    r"eap-ig +ROC AUC against the known circuit 1\.000",
    r"EAP-IG's 13 strongest edges are the known circuit: True",
    r"L0H3 +0\.7\d\d +0\.\d+ +0\.\d+ +0\.\d+ +-?0\.0\d\d +-?0\.00\d",  # path patching: L0H3 -> keys only
    r"L24H4 +logits +logits +1\.2\d\d +True +1\.2\d\d",  # the negative name mover, EAP and exact agree
    r"input +MLP0 +mlp +-0\.\d+ +True +-5\.\d+",  # EAP misses what exact patching finds
    r"f by the share of edges kept: .*100\.0% 1\.00",
]}
EXPECTED_FIGURES = {"tour.ipynb": [
    "layer 18, head 6", "sink_score", "alpha_k", "needle recall", "every head's role",
    "SmolLM2 on IOI: direct logit attribution", "SmolLM2 on IOI: heads removed", "toy-induction: EAP-IG",
    "SmolLM2 on IOI: EAP circuit"]}


def _text(nb) -> str:
    """Everything a cell printed, and the plain-text form of what it displayed (tables as DataFrame text)."""
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    return "\n".join(o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", "")
                     for o in outputs)


def _figure_titles(nb) -> list[str]:
    """Titles of the plotly figures shown inline (the `notebook` renderer embeds each figure's JSON in its HTML)."""
    html = [o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    return [json.loads(f'"{t}"') for h in html if "Plotly.newPlot" in h
            for t in re.findall(r'"title":\{(?:[^{}]|\{[^{}]*\})*?"text":"((?:[^"\\]|\\.)*)"', h)]


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
    # one thread: beside another pytest worker's torch threads on a 2-core machine, the kernel's two threads made this
    # test 3-11x slower (199 s beside a 2-thread matmul loop, 484 s in a full -n 2 run; 64 s with one thread, 43 s
    # alone with two)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    t0 = time.time()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="interp-tests",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    print(f"{path.name}: {time.time() - t0:.0f}s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert html, "no rich output at all: figures and tables should display inline"
    text = _text(nb)
    missing = [p for p in EXPECTED_TEXT.get(path.name, []) if not re.search(p, text)]
    assert not missing, f"{path.name}: outputs no longer show what the notebook's prose relies on: {missing}"
    titles = _figure_titles(nb)
    missing = [t for t in EXPECTED_FIGURES.get(path.name, []) if not any(t in got for got in titles)]
    assert not missing, f"{path.name}: figures not drawn: {missing} (drawn: {titles})"

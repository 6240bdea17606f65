"""The walkthrough notebook runs top to bottom in a fresh Jupyter kernel of this interpreter (small sizes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def load_generator():
    spec = importlib.util.spec_from_file_location("make_walkthrough", NOTEBOOKS / "make_walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def test_notebook_is_in_sync_with_its_generator():
    nb = nbformat.read(NOTEBOOKS / "walkthrough.ipynb", as_version=4)
    nbformat.validate(nb)
    expected = [(kind, src) for kind, src in load_generator().CELLS]
    got = [("md" if c.cell_type == "markdown" else c.cell_type, c.source) for c in nb.cells]
    assert got == expected, "notebooks/walkthrough.ipynb is stale: run `python notebooks/make_walkthrough.py`"


def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMLAB_NOTEBOOK_FAST", "1")  # the kernel inherits this process's environment
    monkeypatch.delenv("MPLBACKEND", raising=False)  # conftest's Agg would hide the figures; let ipykernel inline them
    nb = nbformat.read(NOTEBOOKS / "walkthrough.ipynb", as_version=4)
    # kernel "python3": jupyter_client runs it with this very interpreter (its argv "python" -> sys.executable).
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert stream_text(code[0]).strip() == sys.executable
    for c in code:
        assert not [o for o in c.outputs if o.output_type == "error"]
    text = "".join(stream_text(c) for c in code)
    assert "trained 1 epoch(s) on 256 images" in text
    assert "max |Grad-CAM * h * w - ReLU(CAM)|" in text
    table = [line.split() for line in text.splitlines() if line.split()[:1] in (["cam"], ["gradcam"], ["gradcam_pp"])]
    assert [row[0] for row in table] == ["cam", "gradcam", "gradcam_pp"]
    assert all(0.0 <= float(v) <= 100.0 for row in table for v in row[1:])
    assert "walkthrough finished" in stream_text(code[-1])
    figures = sum(o.output_type == "display_data" and "image/png" in o.data for c in code for o in c.outputs)
    assert figures == 4  # CAMs + boxes, threshold curves, CAM vs Grad-CAM maps, per-method curves

"""The top-level analysis/ folder runs as shipped: the compound-scaling notebook executes
headless (nbclient) on synthetic rows and prints the refit ratio with its CI, and
paper_figures.py writes its figures and tables; both produce their figure files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS = ROOT / "analysis"


def test_the_compound_scaling_notebook_runs_headless_and_draws_its_figure(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(ANALYSIS / "compound_scaling.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "SYNTHETIC" in text and "refit depth share 0.7" in text and "95% CI" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # drawn inline
    assert (tmp_path / "figures" / "compound_scaling.png").stat().st_size > 10_000


def test_paper_figures_writes_the_figures_and_tables_from_synthetic_rows(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ANALYSIS / "paper_figures.py"), "--synthetic",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("depth.png", "width.png", "compound.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    tables = (tmp_path / "tables.md").read_text()
    assert "SYNTHETIC" in tables and "## activation" in tables and "## se" in tables
    assert "| softplus |" in tables  # the planted best activation tops its table
    assert tables.index("| softplus |") < tables.index("| elu |")


def test_paper_figures_wants_a_folder_or_synthetic(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ANALYSIS / "paper_figures.py")],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 2 and "--synthetic" in done.stderr

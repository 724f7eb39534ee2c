"""The walkthrough notebook runs from top to bottom, headless, and prints its evaluation.

A copy of ``examples/walkthrough.ipynb`` is executed with nbclient in a kernel of this very
interpreter (a kernelspec written for the test, so that a ``python3`` kernel found elsewhere on the
machine cannot stand in for it), in a temporary working folder. Any cell error fails the test with
nbclient's ``CellExecutionError``, which shows the cell and the traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.ipynb"
KERNEL = "anomrec-walkthrough"
# A detector line of batch.evaluate.format_table: name, scored, then ROC-AUC.
TABLE_LINE = r"^{name}\s+\d+\s+(?P<auc>\d\.\d{{4}})\s"


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "stream"
    )


def images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_walkthrough_runs_headless_and_prints_its_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "jupyter"
    install_kernelspec(kernel_name=KERNEL, prefix=str(prefix))  # runs sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # start from a clean copy: only this run's outputs are checked
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        executed = tmp_path / "walkthrough-executed.ipynb"
        nbformat.write(nb, executed)
        exc.add_note(f"examples/walkthrough.ipynb failed; the partly executed copy is {executed}")
        raise

    text = stream_text(nb)
    for data_set in ("shuttle", "synthetic"):
        block = text.split(f"[{data_set}]\n", 1)
        assert len(block) == 2, f"the notebook printed no metrics table for {data_set}"
        for name in ("iforest", "lof", "ensemble"):
            line = re.search(TABLE_LINE.format(name=name), block[1], re.MULTILINE)
            assert line, f"the {data_set} table has no {name} ROC-AUC line"
            assert 0.5 <= float(line["auc"]) <= 1.0
    assert re.search(r"^hybrid\s+0\.\d{4}\s", text, re.MULTILINE), "no Recall@10 line for the hybrid"
    assert images(nb) >= 8, "the notebook drew fewer figures than its sections do"


def test_the_committed_walkthrough_carries_its_outputs() -> None:
    """Readers see the figures without running it, and the file stays small."""
    assert NOTEBOOK.stat().st_size < 2_000_000
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "execute the notebook before committing"
    assert not any(out.output_type == "error" for cell in code for out in cell.outputs)
    assert images(nb) >= 8

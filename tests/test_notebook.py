"""examples/quickstart.ipynb runs top to bottom in a fresh kernel, shows what it promises, and is stored without outputs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def _outputs(cell) -> str:
    """Everything a cell showed: streams, HTML, plain text, and a marker per picture."""
    parts = []
    for out in cell.outputs:
        data = out.get("data", {})
        parts += [out.get("text", ""), data.get("text/html", ""), data.get("text/plain", "")] + (["<PNG>"] if "image/png" in data else [])
    return "\n".join(parts)


def _cell(nb, starts: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts))


def test_the_stored_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook after running every cell in a temp working folder (a failing cell raises CellExecutionError)."""
    work = tmp_path_factory.mktemp("quickstart")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    return nb, work


@pytest.mark.slow
def test_every_cell_runs_without_an_error(executed):
    nb, _ = executed
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert all(o.output_type != "error" for o in cell.outputs)
            assert "Traceback" not in _outputs(cell) and "Warning" not in _outputs(cell)


@pytest.mark.slow
def test_the_outputs_show_data_epochs_metrics_pictures_and_predictions(executed):
    nb, work = executed
    assert "60 images, 5 classes" in _outputs(_cell(nb, "scenetag.explore"))
    train = _cell(nb, "run = scenetag.fit")
    tables = [o.data["text/html"] for o in train.outputs if o.output_type == "display_data"]
    assert len(tables) == 1 and "<th>train loss</th>" in tables[0] and "<td>top</td><td>2/2</td>" in tables[0]  # updated in place to the last epoch
    assert "<th>test</th>" in _outputs(train) and "<td>samples_f1</td>" in _outputs(train)  # the run's metrics table
    assert "<td>samples_f1</td>" in _outputs(_cell(nb, "evaluation = run.evaluate()")) and (work / "quickstart/run/evaluation/report.html").is_file()
    for starts in ("run.show_views", "run.show_results", "run.plot_top_losses"):
        assert "<PNG>" in _outputs(_cell(nb, starts))
    shown = _outputs(_cell(nb, "predictions = run.predict"))
    assert "5 prediction(s)" in shown and "quickstart/data/original/1.jpg" in shown
    rows = list(csv.reader(open(work / "quickstart/predictions.csv", newline="")))
    assert rows[0] == ["image", "labels", "desert", "mountains", "sea", "sunset", "trees", "error"] and len(rows) == 6
    assert "<th>train_loss</th>" in _outputs(_cell(nb, 'scenetag.load_run("quickstart/run").history'))

"""Results render as escaped HTML tables with their values, and the table works without pandas."""
from __future__ import annotations

import csv
from pathlib import Path

from scenetag.infer.outputs import Prediction
from scenetag.metrics import METRIC_KEYS, PER_LABEL_KEYS
from scenetag.notebook.results import Evaluation, Exploration, Predictions, Table, metrics_table, per_label_table

METRICS = {k: 0.1 + i / 100 for i, k in enumerate(METRIC_KEYS)} | {
    "n_images": 9,
    "per_label": {"a<&>": dict(zip(PER_LABEL_KEYS, (0.5, 0.25, 0.3333, 0.9, 4, 0.45))), "sea": dict(zip(PER_LABEL_KEYS, (1.0, 1.0, 1.0, 1.0, 2, 0.5)))},
}


def test_table_rows_columns_csv_and_text(tmp_path):
    t = Table(("image", "p"), (("x.jpg", 0.123456), ("y.jpg", 1.0)))
    assert len(t) == 2 and list(t) == [{"image": "x.jpg", "p": 0.123456}, {"image": "y.jpg", "p": 1.0}]
    assert t.column("p") == [0.123456, 1.0]
    rows = list(csv.reader(open(t.to_csv(tmp_path / "t.csv"), newline="")))
    assert rows == [["image", "p"], ["x.jpg", "0.123456"], ["y.jpg", "1.0"]]
    assert repr(t).splitlines() == ["image  p", "x.jpg  0.1235", "y.jpg  1.0000"]


def test_metrics_tables_hold_every_value():
    t = metrics_table({"val": METRICS, "test": {}})  # an empty part is left out
    assert t.columns == ("metric", "val") and t.column("metric") == list(METRIC_KEYS)
    assert t.column("val") == [METRICS[k] for k in METRIC_KEYS]
    assert per_label_table(METRICS).column("label") == ["a<&>", "sea"]


def test_evaluation_html_shows_the_values_and_escapes_labels(tmp_path):
    html = Evaluation(METRICS, tmp_path)._repr_html_()
    for k in METRIC_KEYS:
        assert f"<td>{k}</td><td>{METRICS[k]:.4f}</td>" in html
    assert "<td>a&lt;&amp;&gt;</td><td>0.5000</td><td>0.2500</td><td>0.3333</td>" in html and "a<&>" not in html
    assert "9 images" in html and str(tmp_path / "report.html") in html
    assert "samples_f1" in repr(Evaluation(METRICS, tmp_path))


def test_predictions_are_a_list_with_an_escaped_table():
    items = [Prediction("<img src=x onerror=alert(1)>.jpg", ["sea"], {"sea": 0.91234, "a<&>": 0.1}), Prediction("bad.jpg", error="cannot read <bad.jpg>")]
    preds = Predictions(items, ["a<&>", "sea"])
    assert preds[0].labels == ["sea"] and len(preds) == 2
    assert preds.table.columns == ("image", "labels", "a<&>", "sea", "error")
    assert list(preds.table)[0] == {"image": items[0].path, "labels": "sea", "a<&>": 0.1, "sea": 0.91234, "error": ""}
    html = preds._repr_html_()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;.jpg" in html and "<th>a&lt;&amp;&gt;</th>" in html
    assert "0.912" in html and "cannot read &lt;bad.jpg&gt;" in html and "2 prediction(s)" in html


def test_exploration_html_shows_the_summary_escaped(tmp_path):
    summary = {"n_images": 4, "per_class": {"<sea>": 3, "sky": 1}, "text": ["4 images, 2 classes <x>"]}
    ex = Exploration(summary, Path(tmp_path))
    html = ex._repr_html_()
    assert "<pre>4 images, 2 classes &lt;x&gt;</pre>" in html and "<td>&lt;sea&gt;</td><td>3</td><td>75.0%</td>" in html
    assert ex.report == tmp_path / "report.html" and repr(ex).startswith("4 images")

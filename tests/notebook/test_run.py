"""A finished run folder as a notebook object: metrics table, pictures, evaluation and prediction."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

import scenetag
from scenetag.errors import ScenetagError
from scenetag.metrics import METRIC_KEYS
from scenetag.notebook import Run, load_run
from scenetag.notebook.figures import Figure
from scenetag.notebook.results import Evaluation, Predictions


@pytest.fixture(scope="module")
def run(trained_run) -> Run:
    return load_run(trained_run[1])


def test_only_a_finished_run_folder_loads(tmp_path):
    with pytest.raises(ScenetagError, match="not a finished run folder"):
        scenetag.load_run(tmp_path)


def test_metrics_history_config_and_classes(run, trained_run):
    cfg, _, result = trained_run
    assert run.metrics == result["metrics"]
    assert (run.config["model"], run.config["train"]) == (cfg.to_dict()["model"], cfg.to_dict()["train"])
    assert run.classes == ["desert", "mountains", "sea", "sunset", "trees"]
    assert len(run.history) == sum(p.epochs for p in cfg.train.phases) and run.history.column("phase")[0] == "head"


def test_html_shows_every_metric_value_and_escapes_the_name(run, tmp_path):
    html = run._repr_html_()
    for part in ("val", "test"):
        for k in METRIC_KEYS:
            assert f"{run.metrics[part][k]:.4f}" in html
    assert "<th>val</th><th>test</th>" in html and "<td>sunset</td>" in html  # per label, test part
    odd = tmp_path / "<b>&run"
    odd.mkdir()
    shutil.copy(run.folder.result, odd / "result.json")
    html = load_run(odd)._repr_html_()
    assert "&lt;b&gt;&amp;run" in html and "<b>&run" not in html


def test_evaluate_scores_the_test_part(run, tmp_path):
    ev = run.evaluate(out=tmp_path / "ev", progress=False)
    assert isinstance(ev, Evaluation) and ev.report.is_file()
    assert ev.metrics["n_images"] == run.metrics["test"]["n_images"] and f"{ev.metrics['samples_f1']:.4f}" in ev._repr_html_()
    other = run.evaluate(data=run.config["data"]["path"], out=tmp_path / "all", progress=False)
    assert other.metrics["n_images"] == 60


def test_predict_files_folders_and_bad_files(run, synth_dir, tmp_path):
    preds = run.predict(synth_dir / "original", progress=False)
    assert isinstance(preds, Predictions) and len(preds) == 60 and preds.classes == run.classes
    assert all(0 <= p <= 1 for r in preds for p in r.probabilities.values()) and all(r.labels for r in preds)  # fallback: at least one label
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    two = run.predict([synth_dir / "original" / "1.jpg", tmp_path / "bad.jpg"])
    assert two[0].error is None and two[1].error and two.table.column("error")[1] == two[1].error
    assert two[0].probabilities == preds[0].probabilities
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenetagError, match="no images found"):
        run.predict(tmp_path / "empty")


def test_show_views_draws_each_cached_view_of_n_images(run):
    fig = run.show_views(2)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3  # train.views of tiny_cfg: orig, flip, crop
    assert [t.get_text() for ax in fig.axes[:3] for t in ax.texts if t.get_text() in ("orig", "flip", "crop")] == ["orig", "flip", "crop"]
    assert fig._repr_png_().startswith(b"\x89PNG")


def _test_losses(run) -> list[tuple[str, float]]:
    rows = list(csv.DictReader(open(run.folder.test_predictions, newline="")))
    out = []
    for r in rows:
        y = np.array([c in r["true"].split() for c in run.classes], dtype=float)
        p = np.clip([float(r[f"p_{c}"]) for c in run.classes], 1e-7, 1 - 1e-7)
        out.append((r["path"], float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())))
    return out


def test_top_losses_are_the_highest_loss_test_images_worst_first(run):
    losses = sorted(_test_losses(run), key=lambda x: -x[1])
    fig = run.plot_top_losses(3)
    shown = [ax.texts[0].get_text() for ax in fig.axes if ax.texts]
    assert shown == [f"loss {loss:.3f}" for _, loss in losses[:3]]


def test_show_results_captions_test_images(run):
    fig = run.show_results(4)
    names = {r["path"].rsplit("/", 1)[-1] for r in csv.DictReader(open(run.folder.test_predictions, newline=""))}
    captions = [ax.texts[0].get_text() for ax in fig.axes if ax.texts]
    assert len(captions) == 4 and set(captions) <= names


def test_a_run_without_a_test_part_says_so(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "result.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ScenetagError, match="no test part"):
        load_run(bare).show_results()

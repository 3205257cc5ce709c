"""explore -> train -> evaluate -> predict through the notebook API, as a notebook calls it."""
from __future__ import annotations

import subprocess
import sys

import pytest

import scenetag
from scenetag.errors import ConfigError, ScenetagError, UsageError
from scenetag.notebook import Run, api
from scenetag.notebook.progress import EpochTable

# A tiny recipe (see tests/conftest.py tiny_cfg): one head phase of 2 epochs at a fixed LR, no LR finder.
TINY = dict(backbone="test_efficientnet", weights="none", model__image_size=48, train__views=["orig", "flip", "crop"], train__batch_size=8,
            train__threads=1, train__lr_find=False, train__phases=[{"name": "head", "unfreeze": 0.0, "epochs": 2, "lr": 0.003, "lr_mult": 1.0}])  # fmt: skip


@pytest.fixture(scope="module")
def notebook_run(synth_dir, tmp_path_factory):
    """(run, the HTML of each table display) of scenetag.fit as it runs in Jupyter (the display recorded)."""
    shown: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "in_notebook", lambda: True)
        mp.setattr(EpochTable, "show", lambda self: shown.append(self.html()))
        run = scenetag.fit(synth_dir, tmp_path_factory.mktemp("nb") / "run", overrides={"train.seed": 1}, **TINY)
    return run, shown


def test_train_returns_the_run_with_the_settings_given(notebook_run, synth_dir):
    run, _ = notebook_run
    assert isinstance(run, Run) and run.folder.best.is_file()
    assert run.config["model"]["backbone"] == "test_efficientnet" and run.config["train"]["seed"] == 1 and run.config["train"]["phases"][0]["lr"] == 0.003
    assert run.config["data"]["path"] == str(synth_dir)
    assert set(run.metrics) == {"val", "test"} and f"{run.metrics['test']['samples_f1']:.4f}" in run._repr_html_()


def test_in_jupyter_a_table_grows_by_one_row_per_epoch(notebook_run):
    _, shown = notebook_run
    assert len(shown) == 3 and [html.count("<td>head</td>") for html in shown] == [0, 1, 2]
    assert "<th>train loss</th>" in shown[0] and "2/2" in shown[-1]


def test_round_trip_evaluate_and_predict(notebook_run, synth_dir):
    run, _ = notebook_run
    ev = run.evaluate(progress=False)
    assert ev.folder == run.folder.evaluation and ev.metrics["n_images"] == run.metrics["test"]["n_images"]
    preds = run.predict(sorted((synth_dir / "original").glob("*.jpg"))[:3])
    assert [p.path for p in preds] == [str(synth_dir / "original" / n) for n in ("1.jpg", "10.jpg", "11.jpg")] and all(p.labels for p in preds)


def test_training_again_reuses_the_finished_run(notebook_run, synth_dir, caplog):
    run, _ = notebook_run
    before = run.folder.result.stat().st_mtime_ns
    again = scenetag.fit(synth_dir, run.path, overrides={"train.seed": 1}, progress=False, **TINY)
    assert again.path == run.path and run.folder.result.stat().st_mtime_ns == before and "reusing" in caplog.text
    with pytest.raises(ConfigError, match="train.seed"):  # other settings into the same folder
        scenetag.fit(synth_dir, run.path, overrides={"train.seed": 2}, progress=False, **TINY)


@pytest.mark.parametrize(("keywords", "error", "says"), [
    ({"train__bogus": 1}, ConfigError, "unknown config key: train.bogus"),
    ({"train__batch_size": -1}, ConfigError, "train.batch_size must be > 0"),
    ({"epochs": 3}, UsageError, "unknown option 'epochs'"),
    ({"overrides": {"train.phases.7.lr": 0.1}}, ConfigError, "unknown config key: train.phases.7"),
])  # fmt: skip
def test_a_bad_setting_is_one_line_before_anything_runs(synth_dir, tmp_path, keywords, error, says):
    with pytest.raises(error) as e:
        scenetag.fit(synth_dir, tmp_path / "run", **keywords)
    assert isinstance(e.value, ScenetagError) and says in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_explore_writes_the_report_and_renders_the_summary(synth_dir, tmp_path):
    ex = scenetag.explore(synth_dir, out=tmp_path / "explore", samples=1)
    assert ex.report.is_file() and ex.summary["n_images"] == 60
    assert ex.text[0].startswith("60 images, 5 classes") and "<td>desert</td>" in ex._repr_html_()


def test_explore_check_names_bad_images(synth_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text("image,labels\nbroken.jpg,sea\n")
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ScenetagError, match="broken.jpg"):
        scenetag.explore(data, out=tmp_path / "explore", check=True)


def test_fit_is_the_notebook_train_and_scenetag_train_stays_the_package():
    import scenetag.train.recipe as recipe

    assert callable(scenetag.fit) and scenetag.train.recipe is recipe and not callable(scenetag.train)


def test_the_notebook_names_keep_import_scenetag_light():
    code = "import sys, scenetag\nscenetag.fit\nprint(sorted(m for m in ('torch', 'IPython', 'matplotlib', 'scenetag.notebook') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"

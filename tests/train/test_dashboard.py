"""RUN/index.html: the run's one page, built from its files; every link resolves."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from scenetag.runs import RunDir
from scenetag.config import flatten_config, same_setting
from scenetag.train.dashboard import write_dashboard
from scenetag.train.saver import EPOCH_FIELDS, best_row, selected_epoch


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    _, run, _ = trained_run
    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("cache")))


def _targets(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"#][^"]*)"', page)


def test_training_writes_a_dashboard_whose_links_resolve(trained_run):
    _, run, _ = trained_run
    page = RunDir(run).dashboard.read_text()
    targets = [t for t in _targets(page) if not t.startswith("data:")]
    assert {"curves.png", "best.pt", "metrics.csv", "config.yaml"} <= set(targets)
    assert all((run / t).is_file() for t in targets), [t for t in targets if not (run / t).is_file()]


def test_the_dashboard_says_what_was_trained_and_how(trained_run):
    cfg, run, result = trained_run
    page = RunDir(run).dashboard.read_text()
    # the config keys the tiny recipe changes are highlighted, the defaults are not
    assert "<mark>model.backbone</mark>" in page and "<mark>train.batch_size</mark>" in page and "<mark>train.seed</mark>" not in page
    # split sizes per part
    n = {part: len(ids) for part, ids in __import__("json").loads(RunDir(run).split.read_text()).items()}
    assert f"<td>images</td><td>{n['train']}</td><td>{n['val']}</td><td>{n['test']}</td>" in page
    # LR finders: the suggestion and the LR used; the fixed LR of phase 2 is said to override it
    assert "phase 1 (head): suggested" in page and "phase 2 (top): suggested" in page and "overriding the suggestion" in page
    assert f"{result['metrics']['test']['samples_f1']:.4f}" in page  # the results table
    rows = list(csv.DictReader(open(RunDir(run).metrics_csv)))
    assert list(rows[0]) == EPOCH_FIELDS and all(float(r["lr_end"]) > 0 and r["val_samples_f1_tuned"] for r in rows)


def test_evaluate_and_refit_refresh_it(run_copy):
    from scenetag.train.refit import refit
    from scenetag.workflows.evaluate import evaluate_checkpoint

    run = RunDir(run_copy)
    page = write_dashboard(run.path).read_text()
    run.dashboard.unlink()
    assert write_dashboard(run.path).read_text() == page and "Results" in page  # rebuilt from the folder's files alone
    assert "Evaluation" not in page
    evaluate_checkpoint(run.best, run.evaluation, data=run.path, split="test", progress=False)
    page = run.dashboard.read_text()
    assert "Evaluation" in page and "evaluation/report.html" in page and "mean ECE" in page
    report = (run.evaluation / "report.html").read_text()
    assert '<a href="../index.html">' in report and "the test part of run" in report
    refit(run.path, progress=False)
    page = run.dashboard.read_text()
    assert "final.pt" in page and all((run.path / t).is_file() for t in _targets(page) if not t.startswith("data:"))


def test_best_row_is_the_epoch_best_pt_holds():
    rows = [{"phase": "head", "epoch": e, "val_samples_f1": f, "val_loss": 0.5} for e, f in ((1, 0.5), (2, 0.7))]
    rows += [{"phase": "top", "epoch": e, "val_samples_f1": f, "val_loss": 0.5} for e, f in ((1, 0.72), (2, 0.71), (3, 0.6))]
    phases = [("head", 2), ("top", 3)]
    assert selected_epoch(rows, [2, 3], "f1") == (1, 1) and best_row(rows, phases, "f1") == 2
    assert best_row(rows[:3], phases, "f1") is None  # an unfinished history


def test_flat_keys_and_path_spellings(tmp_path):
    assert flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}
    assert same_setting(str(tmp_path / "d"), str(tmp_path / "x" / ".." / "d")) and not same_setting("bicubic", "bilinear") and same_setting(3, 3)
    assert not same_setting("a/b", "a/c")

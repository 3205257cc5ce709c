from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from scenetag.cli import main
from scenetag.config import config_to_yaml, load_config
from scenetag.errors import DataError, UsageError
from scenetag.io import atomic_write_json, atomic_write_text
from scenetag.metrics import METRIC_KEYS
from scenetag.runs import RunDir
from scenetag.train.cv import summarise_folds
from scenetag.config import flatten_config
from scenetag.workflows.compare import compare, read_run, text_lines, write_report

from ..conftest import tiny_cfg

CHROMIUM = "/usr/bin/chromium"


def _metrics(**values) -> dict:
    return {k: values.get(k, 0.5) for k in METRIC_KEYS} | {"n_images": 20}


def _fake_run(path: Path, metrics: dict, *overrides: str) -> Path:
    """A finished run folder as train writes it: config.yaml and result.json (nothing trained)."""
    run = RunDir(path)
    atomic_write_text(run.config, config_to_yaml(load_config(None, ["data.path=/data", *overrides])))
    atomic_write_json(run.result, {"metrics": {"val": _metrics(), "test": metrics}, "thresholds": [0.5], "run_dir": str(path)})
    return path


def _fake_cv(path: Path, fold_metrics: list[dict], *overrides: str) -> Path:
    """A finished cross-validation folder: one config.yaml per fold and cv.json as cross_validate writes it."""
    cv = RunDir(path)
    for i in range(len(fold_metrics)):
        atomic_write_text(cv.fold(i).config, config_to_yaml(load_config(None, ["data.path=/data", f"train.cache_dir={path / 'cache'}", *overrides])))
    atomic_write_json(cv.cv_summary, summarise_folds(len(fold_metrics), [{"metrics": {"test": m}} for m in fold_metrics]))
    return path


def test_trained_run_against_a_copy_with_changed_config(trained_run, tmp_path):
    _, run, result = trained_run
    copy = RunDir(tmp_path / "copy")
    copy.path.mkdir()
    shutil.copy(RunDir(run).result, copy.result)
    changed = load_config(RunDir(run).config, ["train.mixup=0.0", "train.phases.1.lr=0.001"])
    atomic_write_text(copy.config, config_to_yaml(changed))
    cmp = compare([run, copy.path])
    assert cmp.config_keys == ["train.mixup", "train.phases.1.lr"]
    cells = {r.folder: (r.config_cell("train.mixup"), r.config_cell("train.phases.1.lr"), r.metric_cell("samples_f1")) for r in cmp.runs}
    expected_f1 = f"{result['metrics']['test']['samples_f1']:.4f}"
    assert cells == {str(run): ("0.4", "0.002", expected_f1), str(copy.path): ("0.0", "0.001", expected_f1)}


def test_runs_are_sorted_best_first_losses_lowest_first(tmp_path):
    a = _fake_run(tmp_path / "a", _metrics(samples_f1=0.7, hamming_loss=0.1, mAP=math.nan))
    b = _fake_run(tmp_path / "b", _metrics(samples_f1=0.9, hamming_loss=0.3, mAP=0.6))
    c = _fake_run(tmp_path / "c", _metrics(samples_f1=0.8, hamming_loss=0.2, mAP=0.7))
    order = lambda key: [Path(r.folder).name for r in compare([a, b, c], sort=key).runs]  # noqa: E731
    assert order("samples_f1") == ["b", "c", "a"]
    assert order("hamming_loss") == ["a", "c", "b"]
    assert order("mAP") == ["c", "b", "a"]  # NaN last
    assert order("micro_f1") == ["a", "b", "c"]  # ties keep the given order
    assert compare([a, b, c], sort="bce_loss").sort == "bce_loss"
    lines = text_lines(compare([a, b, c]))
    assert "sorted by samples_f1, higher first" in lines[0]
    assert lines[1].split() == [str(b), str(c), str(a)]
    assert next(line for line in lines if line.startswith("samples_f1")).split() == ["samples_f1", "0.9000", "0.8000", "0.7000"]
    assert lines[-1].startswith("the configs are the same")


def test_cross_validation_shows_mean_and_std_over_folds_and_its_fold1_config(tmp_path):
    cv = _fake_cv(tmp_path / "cv", [_metrics(samples_f1=f) for f in (0.8, 0.9, 1.0)], "model.head=csra")
    atomic_write_text(RunDir(cv).fold(1).config, config_to_yaml(load_config(None, ["data.path=/data", "train.mixup=0.1"])))  # only fold1 counts
    run = _fake_run(tmp_path / "run", _metrics(samples_f1=0.95))
    cmp = compare([cv, run])
    summary = {r.kind: r for r in cmp.runs}
    std = np.std([0.8, 0.9, 1.0])
    assert summary["3-fold CV"].metric_cell("samples_f1") == f"0.9000 ± {std:.4f}" and summary["run"].metric_cell("samples_f1") == "0.9500"
    assert [r.kind for r in cmp.runs] == ["run", "3-fold CV"]
    assert cmp.config_keys == ["model.head"]  # train.cache_dir differs too, but never changes a result
    lines = text_lines(cmp)
    assert next(line for line in lines if line.startswith("model.head")).split() == ["model.head", "reference", "csra"]


def test_flatten_config_names_nested_keys_with_dots():
    flat = flatten_config(tiny_cfg("/data").to_dict())
    assert flat["train.phases.1.lr"] == 0.002 and flat["model.backbone"] == "test_efficientnet"
    assert flat["train.views"] == ["orig", "flip", "crop"] and "train.phases" not in flat and "train" not in flat


def test_keys_only_one_run_has_are_shown_as_absent(tmp_path):
    a = _fake_run(tmp_path / "a", _metrics())
    b = _fake_run(tmp_path / "b", _metrics(), "train.phases=[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.0, lr_mult: 1.0}]")
    cmp = compare([a, b])
    assert "train.phases.1.lr" in cmp.config_keys and "train.phases.0.epochs" in cmp.config_keys and "train.phases.0.lr" not in cmp.config_keys
    assert {r.folder: r.config_cell("train.phases.1.lr") for r in cmp.runs} == {str(a): "0.001", str(b): "—"}


def test_html_page_has_the_sortable_table_and_the_config_differences(tmp_path):
    a = _fake_run(tmp_path / "a", _metrics(samples_f1=0.7, hamming_loss=0.1), "train.mixup=0.1")
    cv = _fake_cv(tmp_path / "cv", [_metrics(samples_f1=f, hamming_loss=0.2) for f in (0.8, 1.0)])
    page = write_report(compare([a, cv], sort="hamming_loss"), tmp_path / "out")
    assert page == tmp_path / "out" / "compare.html"
    html = page.read_text()
    assert '<table class="sortable">' in html and "addEventListener('click'" in html and "<script src" not in html
    assert '<th data-first="asc" data-dir="asc">hamming_loss</th>' in html and '<th data-first="desc">samples_f1</th>' in html
    assert "0.9000 ± 0.1000" in html and "<td>train.mixup</td><td>0.1</td><td>0.4</td>" in html
    assert html.index(f"<td>{a}</td>") < html.index(f"<td>{cv}</td>")  # hamming_loss, lowest first


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Chromium not installed")
def test_clicking_a_header_sorts_the_rows_in_a_browser(tmp_path):
    runs = [_fake_run(tmp_path / n, _metrics(samples_f1=f, hamming_loss=h)) for n, f, h in (("a", 0.7, 0.1), ("b", 0.9, 0.3), ("c", 0.8, 0.2))]
    page = write_report(compare(runs), tmp_path / "out")
    probe = ("<script>const t=document.querySelector('table.sortable'),th=[...t.querySelectorAll('th')],out=[];"
             "const order=()=>[...t.rows].slice(1).map(r=>r.cells[0].textContent.split('/').pop()).join('');"
             f"out.push(order());th[{2 + METRIC_KEYS.index('hamming_loss')}].click();out.push(order());th[2].click();out.push(order());th[2].click();out.push(order());"
             "document.body.dataset.result=out.join(' ')</script></body>")  # fmt: skip
    page.write_text(page.read_text().replace("</body>", probe))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chrome'}", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    # as written (samples_f1 best first), hamming_loss lowest first, samples_f1 highest first, then reversed
    assert 'data-result="bca acb bca acb"' in dom


def test_folders_that_cannot_be_compared_are_one_line_errors(tmp_path, capsys):
    good = _fake_run(tmp_path / "good", _metrics())
    with pytest.raises(UsageError, match="at least 2"):
        compare([good])
    with pytest.raises(UsageError, match="given twice"):
        compare([good, tmp_path / "good" / "."])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=f"{tmp_path / 'empty'}: neither a finished run"):
        read_run(tmp_path / "empty")
    with pytest.raises(UsageError, match="no such folder"):
        read_run(tmp_path / "missing")
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "last.pt").write_bytes(b"")
    with pytest.raises(UsageError, match="an unfinished run"):
        read_run(tmp_path / "started")
    (tmp_path / "cv" / "fold1").mkdir(parents=True)
    with pytest.raises(UsageError, match="an unfinished cross-validation"):
        read_run(tmp_path / "cv")
    no_test = _fake_run(tmp_path / "refit", _metrics())
    atomic_write_json(RunDir(no_test).result, {"metrics": {"val": _metrics()}})
    with pytest.raises(DataError, match=f"{RunDir(no_test).result}: no test metrics"):
        read_run(no_test)
    broken = _fake_run(tmp_path / "broken", _metrics())
    RunDir(broken).result.write_text("{not json")
    with pytest.raises(DataError, match=f"{RunDir(broken).result}: not a readable JSON file"):
        read_run(broken)
    RunDir(good).config.unlink()
    with pytest.raises(DataError, match=f"{RunDir(good).config}: not found"):
        read_run(good)
    assert main(["compare", str(tmp_path / "empty"), str(no_test)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'empty'}: ") and err.count("\n") == 1 and "Traceback" not in err


def test_command_prints_the_table_and_writes_the_page_only_with_out(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", _metrics(samples_f1=0.7), "train.mixup=0.1")
    b = _fake_run(tmp_path / "b", _metrics(samples_f1=0.9))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "config keys that differ:" in out and "train.mixup" in out and "report:" not in out
    assert not list(tmp_path.rglob("compare.html"))
    assert main(["compare", str(a), str(b), "--sort", "bce_loss", "--out", str(tmp_path / "o")]) == 0
    assert f"report: {tmp_path / 'o' / 'compare.html'}" in capsys.readouterr().out
    assert (tmp_path / "o" / "compare.html").is_file()
    with pytest.raises(SystemExit) as e:
        main(["compare", str(a), str(b), "--sort", "accuracy"])
    assert e.value.code == 2
    assert json.loads(RunDir(a).result.read_text())["metrics"]["test"]["samples_f1"] == 0.7  # inputs untouched

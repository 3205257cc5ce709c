"""``train --log tensorboard|mlflow``: one tiny tracked run, read back with each library's own reader."""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from scenetag.cli import main
from scenetag.config import config_to_yaml, load_config
from scenetag.runs import RunDir
from scenetag.train.tracking import BACKENDS, Tracker, TrackingOptions, epoch_metrics, mlflow_uri, run_params, tracked

from ..conftest import tiny_cfg

SKIP_REASON = "the {0} extra is not installed (pip install 'scenetag[{0}]'); its tracking is not tested"
INSTALLED = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def _reader(backend: str) -> None:
    if backend not in INSTALLED:
        pytest.skip(SKIP_REASON.format(backend))


@pytest.fixture(scope="module")
def tracked_run(synth_dir, tmp_path_factory) -> RunDir:
    """A tiny run (two phases of one epoch) trained with `--log` for every installed backend."""
    if not INSTALLED:
        pytest.skip("neither tracking extra is installed (pip install 'scenetag[tensorboard,mlflow]'); tracking is not tested")
    folder = tmp_path_factory.mktemp("tracked")
    cfg = folder / "cfg.yaml"
    cfg.write_text(config_to_yaml(tiny_cfg(synth_dir, **{"train.phases.0.epochs": 1, "train.phases.1.epochs": 1})))
    logs = [arg for b in INSTALLED for arg in ("--log", b)]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["train", "--config", str(cfg), "--out", str(folder / "run"), "-q", *logs]) == 0
    return RunDir(folder / "run")


def _epoch_rows(run: RunDir) -> list[dict[str, str]]:
    with run.metrics_csv.open(newline="") as f:
        return list(csv.DictReader(f))


def _expected_params(run: RunDir) -> dict[str, str]:
    return {k: str(v) for k, v in run_params(load_config(run.config)).items()}


def _test_metrics(run: RunDir) -> dict[str, float]:
    return json.loads(run.result.read_text())["metrics"]["test"]


# --------------------------------------------------------------------------- TensorBoard


@pytest.fixture(scope="module")
def events(tracked_run):
    _reader("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked_run.tensorboard), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    return acc.Reload()


def test_tensorboard_scalars_per_epoch_equal_metrics_csv(tracked_run, events):
    rows = _epoch_rows(tracked_run)
    assert len(rows) == 2
    columns = [k for k in rows[0] if k not in ("phase", "epoch")]
    assert {"lr", "train_loss", "val_loss", "val_samples_f1", "val_mAP"} <= set(columns)
    for column in columns:
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == [1, 2], column
        assert [s.value for s in scalars] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), column  # stored as float32


def test_tensorboard_records_params_final_metrics_and_pictures(tracked_run, events):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = next(d.session_start_info for d in map(plugin_data_pb2.HParamsPluginData.FromString, content.values()) if d.HasField("session_start_info"))
    shown = {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in start.hparams.items()}
    assert shown.keys() == _expected_params(tracked_run).keys()
    assert shown["model.backbone"] == "test_efficientnet" and shown["train.batch_size"] == 8 and shown["train.phases.1.lr"] == pytest.approx(0.002)
    assert shown["train.views"] == '["orig", "flip", "crop"]' and shown["train.cache"] == "True"
    for key, value in _test_metrics(tracked_run).items():
        if key in ("samples_f1", "mAP", "bce_loss"):
            assert events.Scalars(f"final/test_{key}")[-1].value == pytest.approx(value, rel=1e-6)
    assert {"curves", "lr_find_1_head", "lr_find_2_top"} <= set(events.Tags()["images"])
    assert not [t for t in events.Tags()["images"] if t.startswith(("mlflow/", "tensorboard/"))]  # the trackers' own copies are not the run's


# --------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def mlflow_run(tracked_run):
    _reader("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run.mlflow / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("scenetag").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_mlflow_params_equal_the_config(tracked_run, mlflow_run, synth_dir):
    _, run = mlflow_run
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == _expected_params(tracked_run)
    assert run.data.params["model.backbone"] == "test_efficientnet" and run.data.params["train.phases.0.epochs"] == "1"
    assert run.data.params["data.path"] == str(Path(synth_dir).absolute())


def test_mlflow_metric_history_per_epoch_and_final_metrics(tracked_run, mlflow_run):
    client, run = mlflow_run
    rows = _epoch_rows(tracked_run)
    for column in ("lr", "train_loss", "val_loss", "val_samples_f1", "val_mAP"):
        history = client.get_metric_history(run.info.run_id, column)
        assert [(m.step, m.value) for m in history] == [(i + 1, float(r[column])) for i, r in enumerate(rows)], column
    test = _test_metrics(tracked_run)
    assert {k: run.data.metrics[f"final/test_{k}"] for k in ("samples_f1", "micro_f1", "mAP")} == {k: test[k] for k in ("samples_f1", "micro_f1", "mAP")}
    assert "final/val_samples_f1" in run.data.metrics and "final/train_seconds" in run.data.metrics


def test_mlflow_artifacts_hold_the_checkpoint_and_pictures(mlflow_run):
    client, run = mlflow_run
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.pt", "curves.png", "lr_find_1_head.png", "lr_find_2_top.png", "config.yaml", "metrics.csv", "result.json"} <= listed
    assert not listed & {"mlflow", "tensorboard", "cache", "last.pt"}


# --------------------------------------------------------------------------- options and failures


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_package_is_a_one_line_error_before_training(backend, synth_dir, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == backend or m.startswith(backend + ".")] + [backend]:
        monkeypatch.setitem(sys.modules, name, None)  # import of it fails as if not installed
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "-q", "--log", backend]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--log {backend} needs the {backend} extra" in err and f"pip install 'scenetag[{backend}]'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra", [["--log", "mlflow", "--cv", "3"], ["--log-dir", "tb"], ["--log", "mlflow", "--log-dir", "tb"], ["--log", "tensorboard", "--log-uri", "http://x"]])
def test_tracking_options_that_do_not_fit_are_refused(extra, synth_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "-q", *extra]) == 2
    assert capsys.readouterr().err.startswith("error: --log")
    assert not (tmp_path / "r").exists()


def test_mlflow_uri_flag_then_environment_then_the_runs_own_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(TrackingOptions(("mlflow",))) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert mlflow_uri(TrackingOptions(("mlflow",))) == "http://env:5000"
    assert mlflow_uri(TrackingOptions(("mlflow",), uri="http://flag:5000")) == "http://flag:5000"


class _Recorder(Tracker):
    name = "recorder"

    def __init__(self, fail_on: str = ""):
        self.fail_on, self.calls = fail_on, []

    def _record(self, what: str, *args) -> None:
        self.calls.append((what, *args))
        if what == self.fail_on:
            raise OSError("disk full")

    def start(self, params, run_name):
        self._record("start", run_name)

    def log_metrics(self, metrics, step):
        self._record("log_metrics", step, metrics)

    def log_files(self, files, step):
        self._record("log_files", step, [name for _, name in files])

    def close(self, status):
        self._record("close", status)


def test_a_failing_backend_is_dropped_and_the_others_go_on(tmp_path, caplog):
    run = RunDir(tmp_path / "myrun")
    run.path.mkdir()
    (run.path / "curves.png").write_bytes(b"png")
    (run.mlflow / "artifacts").mkdir(parents=True)
    (run.mlflow / "artifacts" / "curves.png").write_bytes(b"copy")
    good, bad = _Recorder(), _Recorder(fail_on="log_metrics")
    bad.own_dir = run.mlflow
    row = {"phase": "head", "epoch": 1, "lr": 0.01, "train_loss": 0.5, "val_loss": float("nan")}
    with caplog.at_level(logging.WARNING), tracked(TrackingOptions(), run.path) as tracking:
        tracking.trackers = [bad, good]
        tracking.on_epoch(SimpleNamespace(history=[row]), None)
    assert tracking.trackers == [good] and bad.calls[-1] == ("close", "FAILED")
    assert "--log recorder: log_metrics failed (disk full)" in caplog.text
    assert good.calls == [("start", "myrun"), ("log_metrics", 1, {"lr": 0.01, "train_loss": 0.5}), ("log_metrics", 1, {}), ("log_files", 1, ["curves.png"]), ("close", "FINISHED")]


def test_an_error_inside_ends_the_tracked_run_failed(tmp_path):
    recorder = _Recorder()
    with pytest.raises(RuntimeError), tracked(TrackingOptions(), tmp_path) as tracking:
        tracking.trackers = [recorder]
        tracking.on_epoch(SimpleNamespace(history=[{"train_loss": 1.0}]), None)
        raise RuntimeError("diverged")
    assert recorder.calls[-1] == ("close", "FAILED") and not any(c[0] == "log_files" for c in recorder.calls)


def test_only_rank_0_tracks(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with tracked(TrackingOptions(BACKENDS), tmp_path / "r") as tracking:  # no library is even imported
        assert tracking.trackers == [] and tracking.callbacks == ()
    assert not (tmp_path / "r").exists()


def test_epoch_metrics_are_the_numbers_of_a_metrics_row():
    assert epoch_metrics({"phase": "head", "epoch": 2, "lr": 1e-3, "val_mAP": float("nan"), "seconds": 1.5}) == {"lr": 1e-3, "seconds": 1.5}


def test_unknown_backend_is_a_config_error():
    from scenetag.errors import ConfigError

    with pytest.raises(ConfigError, match="wandb"):
        TrackingOptions(("wandb",))

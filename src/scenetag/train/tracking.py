"""Experiment tracking: ``train --log tensorboard|mlflow`` records a run in TensorBoard, MLflow or both.

What is recorded: the params (the run's ``config.yaml`` flattened to ``train.phases.1.lr``), every
epoch's metrics (the numeric columns of ``metrics.csv``, step = epoch counted across phases), the final
metrics (``final/test_samples_f1``, ... from ``result.json``), and the run's files: every picture
(``curves.png``, LR-finder plots, evaluation pictures) and the config, metrics and checkpoints
(``best.pt``, ``final.pt``; TensorBoard keeps the pictures only).

One small interface (:class:`Tracker`), one implementation per backend, created from
:class:`TrackingOptions`; a backend's library is imported only when it is used (extras
``scenetag[tensorboard]``, ``scenetag[mlflow]``). Only rank 0 (or the only process) tracks. A backend
starts at the first finished epoch, once the run folder is locked and its config written; a backend
that fails after that is dropped with a warning: tracking never stops a training.
"""
from __future__ import annotations

import abc
import contextlib
import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..config import Config, flatten_config, load_config
from ..errors import ConfigError, MissingExtraError, TrackingError, brief
from ..metrics import METRIC_KEYS
from ..runs import RunDir
from ..version import __version__

if TYPE_CHECKING:
    from torch import nn

    from .state import TrainState

log = logging.getLogger(__name__)
BACKENDS = ("tensorboard", "mlflow")
EXPERIMENT = "scenetag"  # MLflow experiment unless MLFLOW_EXPERIMENT_NAME is set
FINAL_PARTS = ("val", "test")
NOT_METRICS = ("phase", "epoch")  # metrics.csv columns that say where, not how well


@dataclass(frozen=True)
class TrackingOptions:
    """What ``--log``, ``--log-dir`` and ``--log-uri`` ask for."""

    backends: tuple[str, ...] = ()
    log_dir: str | None = None  # TensorBoard: folder of the event files (default: RUN/tensorboard)
    uri: str | None = None  # MLflow: tracking URI (default: $MLFLOW_TRACKING_URI, else the local store RUN/mlflow)

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown tracking backend(s) {unknown}; choose from {list(BACKENDS)}")


# --------------------------------------------------------------------------- what is recorded


def run_params(cfg: Config) -> dict[str, Any]:
    """The config flattened to ``section.key`` (phases by index: ``train.phases.1.lr``); other lists and None as JSON text."""
    return {key: json.dumps(value) if value is None or isinstance(value, list) else value for key, value in flatten_config(cfg.to_dict()).items()}


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.csv row (lr, losses, val metrics, seconds); NaN (no val part) left out."""
    return {k: float(v) for k, v in row.items() if k not in NOT_METRICS and isinstance(v, (int, float)) and math.isfinite(v)}


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """``final/val_samples_f1``, ``final/test_mAP``, ... and ``final/train_seconds`` of a run's result."""
    out = {f"final/{part}_{k}": float(v) for part in FINAL_PARTS for k, v in result.get("metrics", {}).get(part, {}).items() if k in METRIC_KEYS}
    if "train_seconds" in result:
        out["final/train_seconds"] = float(result["train_seconds"])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def run_files(run: RunDir, skip: Sequence[Path] = ()) -> list[tuple[Path, str]]:
    """(file, its name in the run folder) of every picture (reports' and the refit's included) and of the config, metrics and checkpoints.

    Never what the trackers themselves wrote there (``skip``, ``RUN/tensorboard``, ``RUN/mlflow``), nor the cache.
    """
    skipped = [p.resolve() for p in (*skip, run.cache, run.tensorboard, run.mlflow)]
    pictures = [p for p in sorted(run.path.rglob("*.png")) if not any(p.resolve().is_relative_to(s) for s in skipped)]
    files = [p for p in (*pictures, run.config, run.metrics_csv, run.result, run.best, run.final) if p.is_file()]
    return [(p, p.relative_to(run.path).as_posix()) for p in files]


def _epochs_done(run: RunDir) -> int:
    if not run.metrics_csv.is_file():
        return 0
    with run.metrics_csv.open(newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


# --------------------------------------------------------------------------- backends


class Tracker(abc.ABC):
    """One backend. ``start`` once (at the first epoch), then metrics by step and files, then ``close``."""

    name = ""
    own_dir: Path | None = None  # where it writes inside the run folder (never recorded as a run file)

    @abc.abstractmethod
    def start(self, params: dict[str, Any], run_name: str) -> None: ...

    @abc.abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    @abc.abstractmethod
    def log_files(self, files: list[tuple[Path, str]], step: int) -> None: ...

    @abc.abstractmethod
    def close(self, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED (interrupted)."""


def _missing(backend: str, exc: ImportError) -> MissingExtraError:
    return MissingExtraError(f"--log {backend} needs the {backend} extra ({brief(exc)}): pip install 'scenetag[{backend}]'")


class TensorBoardTracker(Tracker):
    """Event files: scalars per epoch, the params in the HPARAMS tab, the pictures as images."""

    name = "tensorboard"

    def __init__(self, log_dir: Path):
        try:
            import tensorboard  # noqa: F401  (torch's writer needs it)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise _missing(self.name, e) from None
        self._writer_class, self.own_dir, self.writer, self._end = SummaryWriter, log_dir, None, None

    def start(self, params: dict[str, Any], run_name: str) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.writer = self._writer_class(log_dir=str(self.own_dir))
        shown = {k: str(v) if isinstance(v, bool) else v for k, v in params.items()}
        final_tags = {f"final/{part}_{k}": 0.0 for part in FINAL_PARTS for k in METRIC_KEYS}  # the HPARAMS tab's metric columns
        experiment, session_start, self._end = hparams(shown, final_tags)
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        log.info("--log tensorboard: event files in %s (see them: tensorboard --logdir %s)", self.own_dir, self.own_dir)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_files(self, files: list[tuple[Path, str]], step: int) -> None:
        import numpy as np
        from PIL import Image

        for path, name in files:
            if path.suffix.lower() == ".png":
                with Image.open(path) as im:
                    self.writer.add_image(name.removesuffix(".png"), np.asarray(im.convert("RGB")), step, dataformats="HWC")

    def close(self, status: str) -> None:
        if self.writer is not None:
            if status == "FINISHED":
                self.writer.file_writer.add_summary(self._end)
            self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run: params, metric histories, final metrics, the files as artifacts.

    ``uri`` None: the local store ``RUN/mlflow`` (``mlflow.db``, artifacts in ``artifacts/``), made at the
    first epoch; a given URI (a tracking server) is checked at once, before any training.
    """

    name = "mlflow"

    def __init__(self, run: RunDir, uri: str | None):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise _missing(self.name, e) from None
        self._client_class, self._metric, self._param = MlflowClient, Metric, Param
        self.run, self.uri, self.own_dir, self.run_id = run, uri, run.mlflow, None
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        self.client, self.experiment_id = (None, None) if uri is None else self._open(uri, None)

    def _open(self, uri: str, artifacts: Path | None) -> tuple[Any, str]:
        try:
            client = self._client_class(tracking_uri=uri)
            found = client.get_experiment_by_name(self.experiment)
            exp_id = found.experiment_id if found else client.create_experiment(self.experiment, artifact_location=artifacts.as_uri() if artifacts else None)
        except Exception as e:  # noqa: BLE001  (any store or server failure, named in one line)
            raise TrackingError(f"--log mlflow: cannot use the tracking store {uri} ({brief(e)})") from None
        return client, exp_id

    def start(self, params: dict[str, Any], run_name: str) -> None:
        if self.client is None:
            self.own_dir.mkdir(parents=True, exist_ok=True)
            self.client, self.experiment_id = self._open(f"sqlite:///{(self.own_dir / 'mlflow.db').resolve()}", (self.own_dir / "artifacts").resolve())
        tags = {"scenetag.run_dir": str(self.run.path.resolve()), "scenetag.version": __version__}
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        items = [self._param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        log.info("--log mlflow: run %s of experiment %r in %s", self.run_id, self.experiment, self.client.tracking_uri)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, v, now, step) for k, v in metrics.items()])

    def log_files(self, files: list[tuple[Path, str]], step: int) -> None:
        for path, name in files:
            folder = str(Path(name).parent.as_posix())
            self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)


def mlflow_uri(options: TrackingOptions) -> str | None:
    """``--log-uri``, else ``$MLFLOW_TRACKING_URI``, else None: the run's local store (``RUN/mlflow``)."""
    return options.uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def make_trackers(options: TrackingOptions, run: RunDir) -> list[Tracker]:
    """One tracker per requested backend (imports its library now: a missing one fails before any training)."""
    make: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: TensorBoardTracker(Path(options.log_dir) if options.log_dir else run.tensorboard),
        "mlflow": lambda: MlflowTracker(run, mlflow_uri(options)),
    }
    return [make[b]() for b in dict.fromkeys(options.backends)]


# --------------------------------------------------------------------------- one run's tracking


class Tracking:
    """The trackers of one run, used together: ``callbacks`` for training, then ``finish``, then ``close``."""

    def __init__(self, run: RunDir, trackers: Sequence[Tracker] = ()):
        self.run, self.trackers = run, list(trackers)
        self.started, self.step = False, 0

    @property
    def callbacks(self) -> tuple[Callable[["TrainState", "nn.Module"], None], ...]:
        """For :func:`scenetag.train.recipe.train`: none when nothing is tracked."""
        return (self.on_epoch,) if self.trackers else ()

    def on_epoch(self, state: "TrainState", model: "nn.Module") -> None:
        self.step = len(state.history)
        self._start()
        self._each("log_metrics", epoch_metrics(state.history[-1]), self.step)

    def finish(self) -> None:
        """After training (and a refit): the final metrics of ``result.json``, then the run's files."""
        if not self.trackers:
            return
        self.step = self.step or _epochs_done(self.run)
        self._start()
        result = json.loads(self.run.result.read_text()) if self.run.result.is_file() else {}
        self._each("log_metrics", final_metrics(result), self.step)
        self._each("log_files", run_files(self.run, [t.own_dir for t in self.trackers if t.own_dir]), self.step)

    def close(self, status: str) -> None:
        if self.started:
            self._each("close", status)

    def _start(self) -> None:
        if not self.started:
            self.started = True
            params = run_params(load_config(self.run.config)) if self.run.config.is_file() else {}
            self._each("start", params, self.run.path.resolve().name)

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001  (a tracking failure never stops a training)
                log.warning("--log %s: %s failed (%s); the run goes on without it", tracker.name, method, brief(e))
                self.trackers.remove(tracker)
                with contextlib.suppress(Exception):
                    tracker.close("FAILED")


@contextlib.contextmanager
def tracked(options: TrackingOptions, run_dir: Path | str) -> Iterator[Tracking]:
    """Track what happens inside (``train`` with ``tracking.callbacks``, a refit, ...) into the run ``run_dir``.

    Leaving normally records the final metrics and the files; the tracked run ends FINISHED,
    FAILED (an error) or KILLED (Ctrl-C). Under torchrun only rank 0 tracks.
    """
    run = RunDir(run_dir)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    tracking = Tracking(run, make_trackers(options, run) if main_rank else [])
    status = "FAILED"
    try:
        yield tracking
        tracking.finish()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.close(status)

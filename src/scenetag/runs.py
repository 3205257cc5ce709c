"""The run folder: every file name a run writes or reads is defined here, once.

A run folder (``scenetag train --out RUN``) holds the config, the split, the
checkpoints, the per-epoch metrics and the reports; a cross-validation folder
holds one run folder per fold plus ``cv.json``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import UsageError


REPORT_PAGE = "report.html"  # the HTML report of a folder (explore/, evaluation/, an audit)


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    path: Path

    def __init__(self, path: Path | str):
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    # what the run was
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def versions(self) -> Path:
        return self.path / "versions.json"

    @property
    def seed(self) -> Path:
        return self.path / "seed"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def data_identity(self) -> Path:
        """Where the run's data was (absolute) and its fingerprint, checked whenever the run's images are read again."""
        return self.path / "data.json"

    # what it produced
    @property
    def best(self) -> Path:
        """The selected (evaluated) model, with tuned thresholds once the run is finished."""
        return self.path / "best.pt"

    @property
    def final(self) -> Path:
        """The model the run ships: best.pt's recipe retrained on every labelled image (``refit``)."""
        return self.path / "final.pt"

    @property
    def refit(self) -> "RunDir":
        """The run folder of the refit that produced final.pt."""
        return RunDir(self.path / "refit")

    def shipped_model(self) -> Path:
        """What predict, serve, export and evaluate use when given the run folder: final.pt, else best.pt."""
        return self.final if self.final.is_file() else self.best

    @property
    def last(self) -> Path:
        """Weights and training state after the latest epoch: what ``--resume`` continues."""
        return self.path / "last.pt"

    @property
    def result(self) -> Path:
        """Written last: a run with this file is finished."""
        return self.path / "result.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def dashboard(self) -> Path:
        """The run's one page: what was trained, how, and how well (``train``, ``run`` and ``evaluate`` write it)."""
        return self.path / "index.html"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def tensorboard(self) -> Path:
        """Event files of ``train --log tensorboard`` (unless ``--log-dir``)."""
        return self.path / "tensorboard"

    @property
    def mlflow(self) -> Path:
        """The local MLflow store of ``train --log mlflow`` (``mlflow.db`` + ``artifacts/``), unless a tracking URI is given."""
        return self.path / "mlflow"

    @property
    def test_predictions(self) -> Path:
        return self.path / "test_predictions.csv"

    @property
    def summary(self) -> Path:
        """What ``scenetag run`` did: seconds per step, test metrics."""
        return self.path / "run.json"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def explore(self) -> Path:
        return self.path / "explore"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation"

    def lr_find_plot(self, phase_index: int, phase_name: str) -> Path:
        """``phase_index`` counts from 0; the file names count phases from 1."""
        return self.path / f"lr_find_{phase_index + 1}_{phase_name}.png"

    def lr_find_data(self, phase_index: int, phase_name: str) -> Path:
        return self.path / f"lr_find_{phase_index + 1}_{phase_name}.json"

    # cross-validation folders
    def fold(self, index: int) -> "RunDir":
        """Fold ``index`` (from 0) of a cross-validation folder: ``fold1`` ... ``foldK``."""
        return RunDir(self.path / f"fold{index + 1}")

    @property
    def cv_summary(self) -> Path:
        return self.path / "cv.json"

    @property
    def ensemble(self) -> Path:
        return self.path / "ensemble.pt"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def is_finished(self) -> bool:
        return self.result.is_file()

    def is_started(self) -> bool:
        return self.last.is_file()


@dataclass(frozen=True)
class AuditDir:
    """Paths inside an audit folder (``scenetag audit --out DIR``): the suspected label errors and their review."""

    path: Path

    def __init__(self, path: Path | str):
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)

    @property
    def cv(self) -> RunDir:
        """The cross-validation whose out-of-fold probabilities the audit scores (when it trained one itself)."""
        return RunDir(self.path / "cv")

    @property
    def suspects(self) -> Path:
        return self.path / "suspects.csv"

    @property
    def scores(self) -> Path:
        return self.path / "scores.csv"

    @property
    def report(self) -> Path:
        return self.path / REPORT_PAGE

    @property
    def summary(self) -> Path:
        return self.path / "audit.json"

    @property
    def suggested_labels(self) -> Path:
        """The labels with every suspect accepted unseen (the automatic correction; review is the careful one)."""
        return self.path / "labels.suggested.csv"

    @property
    def decisions(self) -> Path:
        """What ``scenetag review`` decided for each suspect, saved after every decision."""
        return self.path / "decisions.json"

    @property
    def reviewed_labels(self) -> Path:
        """The labels with every accepted suggestion applied (the original labels file is never changed)."""
        return self.path / "labels.reviewed.csv"


def model_file(path: Path | str, evaluated: bool = False) -> Path:
    """A model file as given, or the model a run folder ships (final.pt, else best.pt).

    ``evaluated``: a run folder's best.pt, the model its held-out parts can score (final.pt trained on them).
    """
    given = Path(path)
    if not given.is_dir():
        return given
    shipped = RunDir(given).best if evaluated else RunDir(given).shipped_model()
    if not shipped.is_file():
        raise UsageError(f"{given}: a folder without {RunDir(given).final.name} or {RunDir(given).best.name}; pass a model file or a finished run folder")
    return shipped


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def locked(run: RunDir) -> Iterator[RunDir]:
    """Hold ``RUN/.lock`` (holding this process's PID) while writing into a run folder.

    A second process aiming at the same folder gets a clear error instead of
    interleaving files; a lock left by a process that no longer exists is taken over.
    """
    created = not run.path.exists()
    run.path.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(run.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(run.lock_file.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise UsageError(f"{run} is in use by another scenetag process (PID {pid}); wait for it or use another --out (if no scenetag runs there, remove {run.lock_file})") from None
            if pid == os.getpid():
                yield run  # re-entrant: this process already holds it (e.g. run -> train)
                return
            with contextlib.suppress(FileNotFoundError):
                run.lock_file.unlink()  # stale: its process is gone
    else:
        raise UsageError(f"{run}: could not take the run folder's lock ({run.lock_file})")
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield run
    finally:
        with contextlib.suppress(OSError):
            if run.lock_file.read_text().strip() == str(os.getpid()):
                run.lock_file.unlink()
            if created and not any(run.path.iterdir()):
                run.path.rmdir()  # refused before writing anything: leave no empty folder behind

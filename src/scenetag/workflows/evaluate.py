"""``scenetag evaluate``: a model scored on labelled images, with metrics.json and an explained report.

The images are a data set in any layout (all of it is scored) or the held-out
part (``test``/``val``) of a run folder, read from its config and split.json.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import load_config
from ..data.dataset import MultiLabelDataset
from ..data.images import DEFAULT_MAX_PIXELS, open_image
from ..data.layouts import load_dataset
from ..errors import DataError
from ..infer.predictor import Predictor
from ..io import atomic_write_json
from ..metrics import METRIC_KEYS, PER_LABEL_KEYS, apply_thresholds, expected_calibration_error, multilabel_metrics, per_image_bce
from ..report.figures import plot_confusion_matrices, plot_image_grid, plot_pr_curves, plot_reliability, plot_training_curves, result_caption
from ..report.html import Section, figure, table, write_page
from ..runs import RunDir
from ..train.rundata import load_run_parts

log = logging.getLogger(__name__)


def run_max_pixels(run_dir: Path | str) -> int:
    """The decoded-image bound a run was trained with (``data.max_pixels``)."""
    return load_config(RunDir(run_dir).config).data.max_pixels


def evaluate_checkpoint(model_path, out, data=None, labels=None, fmt: str = "auto", split: str | None = None, fallback: bool = True, progress: bool = True, n_grid: int = 20, max_pixels: int | None = None) -> dict:
    """Score ``model_path``; write metrics.json, pictures and report.html into ``out``; return the metrics.

    ``data`` is a data set in any layout or, with ``split``, a run folder
    (default: the model's folder) whose held-out ``split`` is scored.
    ``max_pixels`` bounds decoded images (default: the run's ``data.max_pixels`` with ``split``).
    """
    out, model_path = Path(out), Path(model_path)
    if not split and data is None:
        raise DataError("evaluate needs images: --data DIR (a labelled data set) or --split test|val (a run's held-out part)")
    if split:
        run_dir = Path(data) if data else model_path.parent
        ds = load_run_parts(run_dir, [split])[split]
        if not len(ds):
            raise DataError(f"{run_dir}: its {split} part is empty (the run was trained with data.{split}=0)")
        max_pixels = max_pixels or run_max_pixels(run_dir)
    else:
        ds = load_dataset(data, labels, fmt)
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    predictor = Predictor(model_path, fallback=fallback, max_pixels=max_pixels)
    probs = predictor.dataset_probabilities(ds, progress=progress)
    y = ds.labels.astype(np.uint8)
    m = multilabel_metrics(y, probs, predictor.thresholds, ds.classes, fallback=fallback)
    eces = [expected_calibration_error(y[:, j], probs[:, j]) for j in range(y.shape[1])]
    m["ece"] = dict(zip(ds.classes, eces))
    m["mean_ece"] = float(np.mean(eces))
    for c, e in zip(ds.classes, eces):
        m["per_label"][c]["ece"] = e
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", m)
    write_evaluation_report(out, ds, probs, predictor.thresholds, m, eces, model_path, fallback, n_grid, max_pixels)
    return m


def _result_grid(ds: MultiLabelDataset, probs: np.ndarray, pred: np.ndarray, indices: Sequence[int], path: Path, title: str, max_pixels: int) -> Path:
    classes = list(ds.classes)
    images = [open_image(ds.paths[i], max_pixels) for i in indices]
    captions = [result_caption(ds.paths[i].name, ds.label_names(i), [c for c, v in zip(classes, pred[i]) if v], dict(zip(classes, probs[i]))) for i in indices]
    return plot_image_grid(images, captions, path, ncols=5, title=title)


def _figures(out: Path, ds: MultiLabelDataset, probs: np.ndarray, thresholds: np.ndarray, eces: Sequence[float], model_path: Path, fallback: bool, n_grid: int, max_pixels: int) -> list[Section]:
    y, classes = ds.labels.astype(np.uint8), list(ds.classes)
    pred = apply_thresholds(probs, thresholds, fallback)
    sample = sorted(np.random.default_rng(0).permutation(len(ds))[: min(n_grid, len(ds))].tolist())
    worst = np.argsort(-per_image_bce(y, probs))[: min(15, len(ds))].tolist()
    sections = [
        Section("Predictions", figure(_result_grid(ds, probs, pred, sample, out / "predictions.png", "True vs predicted labels", max_pixels)), "Random images: correct labels green, missed orange, extra red, with probabilities."),
        Section("Highest loss", figure(_result_grid(ds, probs, pred, worst, out / "highest_loss.png", "Highest-loss images", max_pixels)), "The images the model gets most wrong (largest per-image BCE)."),
        Section("Confusion per label", figure(plot_confusion_matrices(y, pred, classes, out / "confusion.png")), "A 2x2 confusion matrix for each label at its threshold."),
        Section("Precision-recall", figure(plot_pr_curves(y, probs, thresholds, classes, out / "pr_curves.png")), "Per label, with the tuned threshold marked."),
        Section("Calibration", figure(plot_reliability(y, probs, classes, eces, out / "reliability.png")), "Reliability diagrams and expected calibration error per label."),
    ]
    run_csv = RunDir(model_path.parent).metrics_csv
    rows = list(csv.DictReader(open(run_csv))) if run_csv.is_file() else []
    if rows:
        sections.append(Section("Training curves", figure(plot_training_curves(rows, out / "curves.png")), "Loss and validation metrics per epoch of the run."))
    return sections


def write_evaluation_report(out: Path, ds: MultiLabelDataset, probs: np.ndarray, thresholds: np.ndarray, m: dict, eces: Sequence[float], model_path: Path, fallback: bool, n_grid: int, max_pixels: int) -> Path:
    """Pictures of the results and one report.html that embeds them."""
    keys = list(METRIC_KEYS) + ["mean_ece"]
    cols = list(PER_LABEL_KEYS[:4]) + ["ece"] + list(PER_LABEL_KEYS[4:])
    sections = [
        Section("Metrics", table(("metric", "value"), [(k, m[k]) for k in keys])),
        Section("Per label", table(["label"] + cols, [[c] + [r[k] for k in cols] for c, r in m["per_label"].items()])),
    ] + _figures(out, ds, probs, thresholds, eces, model_path, fallback, n_grid, max_pixels)
    return write_page(out / "report.html", f"Evaluation of {model_path.name}", sections, subtitle=[f"{m['n_images']} images from {ds.root}"])

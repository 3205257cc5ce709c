"""``scenetag evaluate``: a model scored on labelled images, with metrics.json and an explained report.

The images are a data set in any layout (all of it is scored) or the held-out
part (``test``/``val``) of a run folder, read from its config and split.json.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import load_config
from ..data.dataset import MultiLabelDataset
from ..data.images import DEFAULT_MAX_PIXELS, open_image, thumbnail_jpeg
from ..data.layouts import load_dataset
from ..errors import DataError
from ..infer.predictor import Predictor
from ..io import atomic_write_json
from ..metrics import METRIC_KEYS, PER_LABEL_KEYS, apply_thresholds, cross_label_confusion, errors_by_kind, expected_calibration_error, multilabel_metrics, per_image_bce
from ..report.figures import plot_confusion_matrices, plot_image_grid, plot_pr_curves, plot_reliability, result_caption
from ..report.html import Card, Section, figure, gallery, link, paragraph, table, write_page
from ..runs import REPORT_PAGE, RunDir
from ..train.dashboard import write_dashboard
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
    if split and predictor.meta.get("refit"):
        raise DataError(f"{model_path}: a refit model, trained on every image of its run including the {split} part, so scoring that part says nothing; evaluate the run's best.pt (its metrics are final.pt's estimate) or use --data with new images")
    probs = predictor.dataset_probabilities(ds, progress=progress)
    source = f"the {split} part of run {Path(data or model_path.parent).resolve()}" if split else f"data set {ds.root}"
    tuned_on = predictor.meta.get("metrics", {}).get("val", {}).get("n_images")
    scored = Scored(ds, probs, apply_thresholds(probs, predictor.thresholds, fallback), predictor.thresholds, max_pixels, source, tuned_on)
    m = scored_metrics(scored, fallback)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", m)
    write_evaluation_report(out, scored, m, model_path, n_grid)
    if split and RunDir(data or model_path.parent).result.is_file():
        write_dashboard(data or model_path.parent)  # the run's page now shows this evaluation
    return m


@dataclass(frozen=True)
class Scored:
    """A data set with a model's probabilities, its 0/1 decisions and the thresholds behind them."""

    ds: MultiLabelDataset
    probs: np.ndarray
    pred: np.ndarray
    thresholds: np.ndarray
    max_pixels: int
    source: str = ""  # which images: "the test part of run R" or "data set D"
    tuned_on: int | None = None  # validation images the thresholds were tuned on (from the model's metadata)

    @property
    def y(self) -> np.ndarray:
        return self.ds.labels.astype(np.uint8)


def scored_metrics(s: Scored, fallback: bool) -> dict:
    """Every metric, calibration (ECE per label) and the errors by kind (missed / extra per label)."""
    m = multilabel_metrics(s.y, s.probs, s.thresholds, s.ds.classes, fallback=fallback)
    eces = [expected_calibration_error(s.y[:, j], s.probs[:, j]) for j in range(s.y.shape[1])]
    m["ece"] = dict(zip(s.ds.classes, eces))
    m["mean_ece"] = float(np.mean(eces))
    for c, e in zip(s.ds.classes, eces):
        m["per_label"][c]["ece"] = e
    m["errors_by_kind"] = errors_by_kind(s.y, s.pred, s.ds.classes)
    return m


def _result_grid(s: Scored, indices: Sequence[int], path: Path, title: str) -> Path:
    classes = list(s.ds.classes)
    images = [open_image(s.ds.paths[i], s.max_pixels) for i in indices]
    thresholds = dict(zip(classes, s.thresholds.tolist()))
    captions = [result_caption(s.ds.paths[i].name, s.ds.label_names(i), [c for c, v in zip(classes, s.pred[i]) if v], dict(zip(classes, s.probs[i])), thresholds) for i in indices]
    return plot_image_grid(images, captions, path, ncols=5, title=title)


def error_grid_name(kind: str, label: str) -> str:
    """``errors_missed_trees.png``: the grid of one kind of error of one label."""
    return f"errors_{kind}_{re.sub(r'[^A-Za-z0-9_-]+', '_', label)}.png"


def error_sections(out: Path, s: Scored, counts: dict[str, dict[str, int]], per_grid: int = 10) -> list[Section]:
    """A table of missed / extra labels (``counts``, from :func:`errors_by_kind`) and, per label and kind, the most confident mistakes."""
    sections = [Section("Errors by kind", table(("label", "missed (label given, not predicted)", "extra (predicted, not given)"), [(c, k["missed"], k["extra"]) for c, k in counts.items()]),
                        "Each wrong (image, label) pair is a missed label or an extra one; the grids below show the most confident of each.")]  # fmt: skip
    for j, label in enumerate(s.ds.classes):
        for kind, wrong, confidence in (("missed", (s.y[:, j] == 1) & (s.pred[:, j] == 0), -s.probs[:, j]), ("extra", (s.y[:, j] == 0) & (s.pred[:, j] == 1), s.probs[:, j])):
            rows = np.flatnonzero(wrong)
            if len(rows):
                worst = rows[np.argsort(-confidence[rows])][:per_grid].tolist()
                title = f"{kind} {label}: {len(rows)} image(s)" + (f", the {per_grid} most confident" if len(rows) > per_grid else "")
                sections.append(Section(f"{kind.capitalize()} {label}", figure(_result_grid(s, worst, out / error_grid_name(kind, label), title))))
    return sections


def _figures(out: Path, s: Scored, n_grid: int, eces: Sequence[float]) -> list[Section]:
    y, classes = s.y, list(s.ds.classes)
    sample = sorted(np.random.default_rng(0).permutation(len(s.ds))[: min(n_grid, len(s.ds))].tolist())
    worst = np.argsort(-per_image_bce(y, s.probs))[: min(15, len(s.ds))].tolist()
    legend = "correct labels green, missed orange, extra red, each with probability/threshold."
    return [
        Section("Predictions", figure(_result_grid(s, sample, out / "predictions.png", "True vs predicted labels")), f"Random images: {legend}"),
        Section("Highest loss", figure(_result_grid(s, worst, out / "highest_loss.png", "Highest-loss images")), f"The images the model gets most wrong (largest per-image BCE): {legend}"),
        Section("Confusion per label", figure(plot_confusion_matrices(y, s.pred, classes, out / "confusion.png")), "A 2x2 confusion matrix for each label at its threshold."),
        Section("Precision-recall", figure(plot_pr_curves(y, s.probs, s.thresholds, classes, out / "pr_curves.png")), "Per label, zoomed to the useful range; the big marker is the tuned threshold."),
        Section("Calibration", figure(plot_reliability(y, s.probs, classes, eces, out / "reliability.png")), "Reliability diagrams (numbers: images per bin) and expected calibration error per label."),
    ]


def thresholds_caption(s: Scored) -> str:
    tuned = f"tuned to maximise each label's F1 on the run's {s.tuned_on} validation images" if s.tuned_on else "stored in the model"
    return (f"A label is given when its probability reaches its threshold ({tuned}, never on these images); an image with no label "
            "at its threshold gets its most likely label. The pictures below show each label's probability/threshold.")  # fmt: skip


def cross_label_section(s: Scored) -> Section:
    counts = cross_label_confusion(s.y, s.pred)
    support = s.y.sum(0)
    rows = [[f"{c} ({int(support[i])})", *(f"{int(counts[i, j])} ({counts[i, j] / max(support[i], 1):.0%})" for j in range(len(s.ds.classes)))] for i, c in enumerate(s.ds.classes)]
    return Section("Cross-label confusion", table(["true label (images)", *(f"tagged {c}" for c in s.ds.classes)], rows),
                   "Row X, column Y: images labelled X that were tagged Y although not labelled Y (the diagonal: tagged X, the recall). E.g. how often a sunset is also tagged sea.")  # fmt: skip


GALLERY_LIMIT = 400


def gallery_section(s: Scored) -> Section:
    """Every scored image (up to GALLERY_LIMIT), filterable by label and by outcome, with its probabilities and loss."""
    classes, losses = list(s.ds.classes), per_image_bce(s.y, s.probs)
    cards = []
    for i in range(min(len(s.ds), GALLERY_LIMIT)):
        true, pred = set(s.ds.label_names(i)), {c for c, v in zip(classes, s.pred[i]) if v}
        outcome = [name for name, wrong in (("false positive", pred - true), ("false negative", true - pred)) if wrong] or ["correct"]
        probs = " · ".join(f"{c} {p:.2f}" for c, p in zip(classes, s.probs[i]))
        lines = [s.ds.paths[i].name, f"labels: {', '.join(sorted(true)) or '-'}", f"tagged: {', '.join(sorted(pred)) or '-'}", probs, f"loss {losses[i]:.3f}"]
        cards.append(Card(thumbnail_jpeg(s.ds.paths[i], max_pixels=s.max_pixels), lines, {"label": "|".join(sorted(true | pred)), "outcome": "|".join(outcome)}))
    shown = f"the first {len(cards)} of {len(s.ds)}" if len(s.ds) > len(cards) else f"all {len(cards)}"
    return Section("Every image", gallery(cards, ["label", "outcome"]), f"{shown} scored images; filter by a label (given or tagged) and by outcome (false positive: a label tagged but not given; false negative: given but not tagged).")


def _rel_link(out: Path, target: Path) -> str:
    return Path(os.path.relpath(target, out)).as_posix()


def write_evaluation_report(out: Path, s: Scored, m: dict, model_path: Path, n_grid: int) -> Path:
    """Pictures of the results and one report.html that embeds them."""
    keys = list(METRIC_KEYS) + ["mean_ece"]
    cols = list(PER_LABEL_KEYS[:4]) + ["ece"] + list(PER_LABEL_KEYS[4:])
    eces = [m["ece"][c] for c in s.ds.classes]
    run = RunDir(out.parent)
    back = paragraph("") + link(_rel_link(out, run.dashboard), "the run's page: training curves, LR finder, config, data") if run.result.is_file() else paragraph("")
    sections = [
        Section("Metrics", table(("metric", "value"), [(k, m[k]) for k in keys]) + back),
        Section("Per label", table(["label"] + cols, [[c] + [r[k] for k in cols] for c, r in m["per_label"].items()]), thresholds_caption(s)),
        cross_label_section(s),
        gallery_section(s),
    ] + _figures(out, s, n_grid, eces) + error_sections(out, s, m["errors_by_kind"])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = [f"{model_path} scored on {m['n_images']} images: {s.source or s.ds.root}; {when}"]
    return write_page(out / REPORT_PAGE, f"Evaluation of {model_path.name}", sections, subtitle=subtitle)

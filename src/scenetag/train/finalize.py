"""The end of a run: reload the selected weights, fit temperatures and tune thresholds on val,
score the test part, and rewrite best.pt with everything a prediction needs.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..checkpoint import read_checkpoint, save_checkpoint
from ..infer.outputs import Prediction, write_predictions
from ..io import atomic_write_json
from ..metrics import apply_temperatures, apply_thresholds, fit_temperatures, multilabel_metrics, tune_thresholds
from ..runs import RunDir
from .distributed import barrier
from .saver import untuned_thresholds
from .setup import TrainingSetup

log = logging.getLogger(__name__)


def calibrate_and_tune(setup: TrainingSetup, probs_val: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(per-label temperatures or None, per-label thresholds), both fitted on the val part."""
    y_val = setup.labels("val")
    if not len(y_val):
        return None, untuned_thresholds(len(setup.ds.classes))
    temps = None
    if setup.cfg.train.calibrate:
        temps = fit_temperatures(y_val, probs_val)
        log.info("per-label temperatures fitted on val: %s", np.round(temps, 3).tolist())
    return temps, tune_thresholds(y_val, apply_temperatures(probs_val, temps), setup.cfg.train.threshold_mode)


def predictions_of_test_part(setup: TrainingSetup, probs: np.ndarray, thresholds: np.ndarray) -> list[Prediction]:
    """The test part's per-image results, as ``scenetag predict`` reports them."""
    classes = list(setup.ds.classes)
    chosen = apply_thresholds(probs, thresholds)
    return [
        Prediction(str(setup.ds.paths[row]), [c for c, v in zip(classes, chosen[i]) if v], {c: round(float(v), 6) for c, v in zip(classes, probs[i])})
        for i, row in enumerate(setup.split.test)
    ]


def finalize(setup: TrainingSetup, run: RunDir) -> dict[str, Any]:
    """Tune, score and rewrite best.pt; returns the metrics, thresholds and boundary of the selected model."""
    barrier(setup.dist)  # best.pt is complete before any rank reads it
    payload = read_checkpoint(run.best)
    setup.model.load_state_dict(payload["state_dict"])
    boundary = int(payload["meta"]["boundary"])
    probs_val = setup.predict_part(boundary, "val")
    temps, thresholds = calibrate_and_tune(setup, probs_val)
    metrics: dict[str, Any] = {}
    if len(setup.split.val):
        metrics["val"] = multilabel_metrics(setup.labels("val"), apply_temperatures(probs_val, temps), thresholds, setup.ds.classes)
    if len(setup.split.test):
        probs_test = apply_temperatures(setup.predict_part(boundary, "test"), temps)
        metrics["test"] = multilabel_metrics(setup.labels("test"), probs_test, thresholds, setup.ds.classes)
        if setup.dist.is_main:
            true = [setup.ds.label_names(i) for i in setup.split.test]
            write_predictions(predictions_of_test_part(setup, probs_test, thresholds), setup.ds.classes, run.test_predictions, "csv", true_labels=true)
    if setup.dist.is_main:
        extra = {"temperatures": [float(t) for t in temps]} if temps is not None else {}
        save_checkpoint(run.best, setup.model, setup.meta(boundary, thresholds, metrics, **extra))
        atomic_write_json(run.metrics_json, metrics)
    barrier(setup.dist)
    return {"metrics": metrics, "thresholds": thresholds.tolist(), "best_boundary": boundary, "run_dir": str(run)}

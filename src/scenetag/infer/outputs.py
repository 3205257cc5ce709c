"""Writing predictions: the one CSV (and JSON) format every command uses for per-image results."""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OutputError
from ..io import atomic_write_text, csv_text

OUTPUT_FORMATS = ("csv", "json")


@dataclass
class Prediction:
    """One image's result: labels above their thresholds and every probability (or why it was skipped)."""

    path: str
    labels: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def probability_column(label: str) -> str:
    return f"p_{label}"


def read_probabilities(path: Path | str, classes: Sequence[str]) -> np.ndarray:
    """The probability columns of a predictions CSV (e.g. a run's test_predictions.csv), in row order."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return np.array([[float(row[probability_column(c)]) for c in classes] for row in csv.DictReader(f)], dtype=np.float64).reshape(-1, len(classes))
    except (OSError, KeyError, ValueError) as e:
        raise OutputError(f"{path}: not a predictions CSV with a probability for each of {list(classes)} ({e})") from None


def read_label_columns(path: Path | str, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) label indicators of a predictions CSV written with true labels, shape (images, classes) each."""
    index = {c: j for j, c in enumerate(classes)}

    def indicators(names: str) -> list[bool]:
        row = [False] * len(classes)
        for name in names.split():
            row[index[name]] = True
        return row

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return np.array([indicators(r["true"]) for r in rows], dtype=bool).reshape(-1, len(classes)), np.array([indicators(r["labels"]) for r in rows], dtype=bool).reshape(-1, len(classes))
    except (OSError, KeyError) as e:
        raise OutputError(f"{path}: not a predictions CSV with true and predicted labels among {list(classes)} ({e})") from None


def prediction_rows(results: Sequence[Prediction], classes: Sequence[str], true_labels: Sequence[Sequence[str]] | None = None) -> list[list]:
    """Header + one row per image: ``path, [true,] labels, p_<class>..., error`` (``true`` only when known)."""
    header = ["path"] + (["true"] if true_labels is not None else []) + ["labels"] + [probability_column(c) for c in classes] + ["error"]
    rows: list[list] = [header]
    for i, r in enumerate(results):
        true = [" ".join(true_labels[i])] if true_labels is not None else []
        probs = [f"{r.probabilities[c]:.6f}" if c in r.probabilities else "" for c in classes]
        rows.append([r.path] + true + [" ".join(r.labels)] + probs + [r.error or ""])
    return rows


def write_predictions(results: Sequence[Prediction], classes: Sequence[str], path: Path | str, fmt: str = "csv", true_labels: Sequence[Sequence[str]] | None = None) -> Path:
    """CSV (see :func:`prediction_rows`) or JSON (one object per image), written atomically; ``-`` is standard output."""
    if fmt == "json":
        items = [r.to_dict() | ({"true": list(true_labels[i])} if true_labels is not None else {}) for i, r in enumerate(results)]
        text = json.dumps(items, indent=1) + "\n"
    else:
        text = csv_text(prediction_rows(results, classes, true_labels))
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return Path("-")
    return atomic_write_text(path, text)

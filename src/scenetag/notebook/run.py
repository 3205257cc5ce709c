"""A finished run folder as one notebook object: its metrics, pictures of its data and results,
evaluation and prediction; each method calls what the matching ``scenetag`` command calls.
"""
from __future__ import annotations

import csv
import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from ..config import load_config
from ..data.images import open_image
from ..data.preprocessing import Preprocessing
from ..errors import UsageError
from ..infer.outputs import read_label_columns, read_probabilities
from ..metrics import per_image_bce
from ..report.figures import result_caption
from ..report.html import paragraph
from ..runs import RunDir, model_file
from .figures import Figure, image_grid, view_image
from .progress import in_notebook
from .results import Evaluation, Predictions, Table, heading, metrics_table, per_label_table

log = logging.getLogger(__name__)


class Run:
    """A finished training run (``scenetag.train`` or ``scenetag train --out``), read from its folder."""

    def __init__(self, path: Path | str):
        self.folder = RunDir(path)
        if not self.folder.is_finished():
            raise UsageError(f"{path}: not a finished run folder (no {self.folder.result.name}); train one with scenetag.fit(data, out)")
        self.result: dict[str, Any] = json.loads(self.folder.result.read_text())

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """``{"val": {...}, "test": {...}}``: best.pt at its tuned thresholds on the held-out parts."""
        return self.result.get("metrics", {})

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's full configuration, as config.yaml holds it."""
        return load_config(self.folder.config).to_dict()

    @property
    def history(self) -> Table:
        """One row per trained epoch (metrics.csv)."""
        if not self.folder.metrics_csv.is_file():
            return Table((), ())
        with open(self.folder.metrics_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        return Table(tuple(rows[0]), tuple(tuple(_number(v) for v in r) for r in rows[1:])) if rows else Table((), ())

    @cached_property
    def _meta(self) -> dict[str, Any]:
        from ..checkpoint import read_checkpoint

        return read_checkpoint(self.folder.best)["meta"]

    @property
    def classes(self) -> list[str]:
        return list(self._meta["classes"])

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _repr_html_(self) -> str:
        parts = {p: m for p, m in self.metrics.items() if m}
        said = f"trained in {self.result.get('train_seconds', float('nan')):.0f} s; models: " + ", ".join(p.name for p in (self.folder.best, self.folder.final) if p.is_file())
        out = heading(f"Run {self.path}") + str(paragraph(said)) + metrics_table(parts)._repr_html_()
        if "test" in parts:
            out += heading("Per label (test part)") + per_label_table(parts["test"])._repr_html_()
        return out

    # ----------------------------------------------------------------------- commands

    def evaluate(self, data: str | Path | None = None, out: str | Path | None = None, labels: str | Path | None = None, layout: str = "auto", progress: bool | None = None) -> Evaluation:
        """``scenetag evaluate``: best.pt on the run's test part (default), or the shipped model on a labelled data set ``data``.

        Writes metrics.json and report.html into ``out`` (default: RUN/evaluation, or RUN/evaluation-NAME for ``data``).
        """
        from ..workflows.evaluate import evaluate_checkpoint

        split = None if data is not None else "test"
        folder = Path(out) if out is not None else (self.folder.evaluation if split else self.path / f"evaluation-{Path(data).name}")
        bars = not in_notebook() if progress is None else progress
        m = evaluate_checkpoint(model_file(self.path, evaluated=bool(split)), folder, data=data if data is not None else self.path, labels=labels, fmt=layout, split=split, progress=bars)
        return Evaluation(m, folder)

    def predict(self, images: str | Path | Iterable[str | Path | Image.Image], progress: bool | None = None) -> Predictions:
        """``scenetag predict`` with the model the run ships (final.pt, else best.pt): files, folders, glob patterns or PIL images."""
        from ..infer.predictor import expand_paths

        items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
        paths = [i for i in items if isinstance(i, (str, Path))]
        items = expand_paths(paths) if len(paths) == len(items) else items
        if not items:
            raise UsageError(f"no images found in {' '.join(map(str, paths))}")
        bars = not in_notebook() if progress is None else progress
        return Predictions(self._predictor.predict(items, progress=bars), self._predictor.classes)

    @cached_property
    def _predictor(self):
        from ..infer.predictor import Predictor

        return Predictor(model_file(self.path), max_pixels=load_config(self.folder.config).data.max_pixels)

    # ----------------------------------------------------------------------- pictures

    def show_views(self, n: int = 4, seed: int = 0) -> Figure:
        """The augmented views training cached for ``n`` training images (one row each), as the network saw them."""
        from ..data.transforms import image_seed, make_views
        from ..train.bags import train_kinds
        from ..train.rundata import load_run_data

        ds, split = load_run_data(self.path)
        cfg = load_config(self.folder.config)
        rows = np.random.default_rng(seed).permutation(split.train)[:n]
        kinds, pp = train_kinds(cfg), Preprocessing.from_dict(self._meta["preprocessing"])
        images, captions = [], []
        for i in rows:
            views = make_views(open_image(ds.paths[i], cfg.data.max_pixels), kinds, pp, image_seed(cfg.train.seed, int(i))).numpy()
            images += [view_image(v, pp) for v in views]
            captions += [[(kind, "black")] for kind in kinds]
        names = [f"{ds.paths[i].name}: {', '.join(ds.label_names(i)) or '-'}" for i in rows]
        return image_grid(images, captions, ncols=len(kinds), title=f"Training views of {len(rows)} image(s) at {pp.size} px", row_labels=names)

    def _test_part(self) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
        """(paths, true, predicted, probabilities) of the test part, from test_predictions.csv."""
        csv_path = self.folder.test_predictions
        if not csv_path.is_file():
            raise UsageError(f"{self.path}: no {csv_path.name}: the run has no test part (data.test is 0)")
        with open(csv_path, newline="", encoding="utf-8") as f:
            paths = [Path(r["path"]) for r in csv.DictReader(f)]
        true, pred = read_label_columns(csv_path, self.classes)
        return paths, true, pred, read_probabilities(csv_path, self.classes)

    def _result_grid(self, rows: Iterable[int], title: str, losses: np.ndarray | None = None) -> Figure:
        paths, true, pred, probs = self._test_part()
        c = np.array(self.classes)
        max_pixels = load_config(self.folder.config).data.max_pixels
        images, captions = [], []
        for i in rows:
            images.append(open_image(paths[i], max_pixels))
            caption = result_caption(paths[i].name, list(c[true[i]]), list(c[pred[i]]), dict(zip(self.classes, probs[i])))
            captions.append(([(f"loss {losses[i]:.3f}", "black")] if losses is not None else []) + caption)
        return image_grid(images, captions, ncols=5, title=title)

    def show_results(self, n: int = 10, seed: int = 0) -> Figure:
        """``n`` random test images: correct labels green, missed orange, extra red, with probabilities."""
        paths, *_ = self._test_part()
        rows = sorted(np.random.default_rng(seed).permutation(len(paths))[:n].tolist())
        return self._result_grid(rows, f"True vs predicted labels, {len(rows)} test image(s)")

    def plot_top_losses(self, k: int = 9) -> Figure:
        """The ``k`` test images with the highest loss (per-image BCE over the labels), worst first."""
        _, true, _, probs = self._test_part()
        losses = per_image_bce(true.astype(np.float64), probs)
        worst = np.argsort(-losses, kind="stable")[:k].tolist()
        return self._result_grid(worst, f"Highest-loss test images ({len(worst)} of {len(losses)})", losses)


def _number(text: str) -> Any:
    """A metrics.csv cell: a number where it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_run(path: Path | str) -> Run:
    """A finished run folder as a :class:`Run`."""
    return Run(path)

"""``RUN/index.html``: one page per run that says what was trained, how, and how well, and links everything else.

Written at the end of training (``train``, ``run``) and refreshed by ``evaluate``; it reads
only the run folder's files, so it can be rebuilt at any time (:func:`write_dashboard`).
Pictures and reports are linked, not copied: the page shows the files as they are now.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..config import Config, flatten_config, load_config, same_setting
from ..metrics import METRIC_KEYS
from ..report.html import Section, highlighted, image, link, paragraph, table, tiles, write_page
from ..runs import REPORT_PAGE, RunDir
from .rundata import load_run_parts

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _rel(run: RunDir, path: Path) -> str:
    return Path(os.path.relpath(path, run.path)).as_posix()


def _metrics_table(metrics: dict[str, dict[str, Any]]) -> Any:
    parts = [p for p in ("val", "test") if metrics.get(p)]
    return table(["metric", *parts], [[k, *(metrics[p].get(k, float("nan")) for p in parts)] for k in METRIC_KEYS])


def summary_section(run: RunDir, result: dict[str, Any]) -> Section:
    metrics = result.get("metrics", {})
    n = {p: metrics[p].get("n_images") for p in ("val", "test") if metrics.get(p)}
    caption = "best.pt at its tuned thresholds: " + ", ".join(f"{p} part {k} images" for p, k in n.items()) + "; the test part never took part in training or tuning."
    if run.final.is_file():
        caption += " final.pt (the shipped model) retrained on every image; these figures are its held-out estimate."
    return Section("Results", _metrics_table(metrics), caption)


def data_section(run: RunDir, cfg: Config) -> Section:
    parts = load_run_parts(run.path, PARTS)
    classes = list(next(iter(parts.values())).classes)
    rows = [[c, *(int(parts[p].labels[:, j].sum()) for p in PARTS)] for j, c in enumerate(classes)]
    rows.append(["images", *(len(parts[p]) for p in PARTS)])
    source = f"{Path(cfg.data.path).resolve()}" + (f", labels {Path(cfg.data.labels).resolve()}" if cfg.data.labels else "")
    return Section("Data", table(["label", *PARTS], rows), f"Images per label in each part of the split (seed {cfg.train.seed}); data: {source}.")


def config_section(cfg: Config) -> Section:
    values, defaults = flatten_config(cfg.to_dict()), flatten_config(load_config(None).to_dict())
    changed = [k for k in values if not same_setting(values[k], defaults.get(k))]
    rows = [[highlighted(k), highlighted(values[k]), defaults.get(k, "")] if k in changed else [k, values[k], ""] for k in values]
    return Section("Configuration", table(["key", "value", "default (when changed)"], rows), f"{len(changed)} key(s) differ from the defaults, highlighted: {', '.join(changed) or 'none'}.")


def time_section(run: RunDir, result: dict[str, Any], rows: list[dict[str, str]]) -> Section:
    per_phase: dict[str, float] = {}
    for r in rows:
        per_phase[r["phase"]] = per_phase.get(r["phase"], 0.0) + float(r["seconds"])
    table_rows = [[phase, len([r for r in rows if r["phase"] == phase]), round(s, 1)] for phase, s in per_phase.items()]
    steps = _read_json(run.path / "run.json").get("seconds", {})
    caption = f"Training took {result.get('train_seconds', float('nan')):.0f} s in all (caching, LR finders, epochs, threshold tuning)"
    caption += "; " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()) + " (scenetag run)." if steps else "."
    versions = _read_json(run.versions)
    return Section("Time and versions", table(["phase", "epochs", "epoch seconds"], table_rows) + paragraph(", ".join(f"{k} {v}" for k, v in versions.items())), caption)


def lr_section(run: RunDir, cfg: Config) -> Section | None:
    """Each phase's LR-finder plot with the suggested and the used LR (and whether the config overrode the suggestion)."""
    items = []
    for i, phase in enumerate(cfg.train.phases):
        data, plot = _read_json(run.lr_find_data(i, phase.name)), run.lr_find_plot(i, phase.name)
        if not data:
            continue
        said = f"phase {i + 1} ({phase.name}): suggested {data['suggestion']:.2e}, used {data['used']:.2e}"
        if data.get("fixed"):
            said += f"; the config fixed this phase's LR (train.phases.{i}.lr), overriding the suggestion"
        items.append((image(_rel(run, plot), plot.stem) if plot.is_file() else paragraph("plot missing"), said))
    return Section("LR finder", tiles(items), "The loss over a sweep of learning rates on the phase's cached activations, before it trains.") if items else None


def evaluation_section(run: RunDir) -> Section | None:
    """What the evaluation adds to the results above: errors by kind and calibration, and its report."""
    metrics = _read_json(run.evaluation / "metrics.json")
    page = run.evaluation / REPORT_PAGE
    if not metrics or not page.is_file():
        return None
    kinds = metrics.get("errors_by_kind", {})
    rows = [[c, k["missed"], k["extra"], metrics.get("ece", {}).get(c, float("nan"))] for c, k in kinds.items()]
    body = table(["label", "missed", "extra", "calibration error (ECE)"], rows) + paragraph("") + link(_rel(run, page), "the evaluation report: every scored image, errors, confusion, precision-recall, calibration")
    return Section("Evaluation", body, f"scenetag evaluate of best.pt on the run's test part ({metrics.get('n_images', '?')} images): wrong (image, label) pairs by kind, mean ECE {metrics.get('mean_ece', float('nan')):.3f}.")


def links_section(run: RunDir) -> Section:
    files = [
        (run.explore / REPORT_PAGE, "exploration report of the data"), (run.evaluation / REPORT_PAGE, "evaluation report"),
        (run.test_predictions, "test predictions (CSV)"), (run.metrics_csv, "metrics per epoch (CSV)"), (run.config, "config"),
        (run.best, "best.pt: the evaluated model"), (run.final, "final.pt: the model to ship (refit on every image)"), (run.last, "last.pt: where training stopped (resume)"),
    ]  # fmt: skip
    rows = [[link(_rel(run, path), path.name), what] for path, what in files if path.is_file()]
    return Section("Files", table(["file", "what"], rows))


def curves_section(run: RunDir) -> Section | None:
    if not run.curves.is_file():
        return None
    return Section("Training curves", image(_rel(run, run.curves), "training curves"), "Loss, validation metrics (at 0.5 and at thresholds tuned on the val part each epoch) and the learning rate per epoch; the epoch kept as best.pt is marked.")


def write_dashboard(run_dir: Path | str) -> Path:
    """Build ``RUN/index.html`` from the run folder's files (a finished training run)."""
    run = RunDir(run_dir)
    cfg = load_config(run.config)
    result = _read_json(run.result)
    rows = list(csv.DictReader(open(run.metrics_csv, newline=""))) if run.metrics_csv.is_file() else []
    sections = [summary_section(run, result), evaluation_section(run), curves_section(run), lr_section(run, cfg), data_section(run, cfg), config_section(cfg), time_section(run, result, rows), links_section(run)]
    subtitle = [f"{run.path.resolve()}", f"backbone {cfg.model.backbone}, {len(cfg.train.phases)} phase(s), {len(rows)} epoch(s), selected by val {cfg.train.select}"]
    path = write_page(run.dashboard, f"Run {run.path.name}", [s for s in sections if s is not None], subtitle)
    log.info("run dashboard: %s", path)
    return path

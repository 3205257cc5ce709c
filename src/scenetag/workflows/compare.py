"""``scenetag compare``: the test metrics of finished runs and cross-validations side by side, with the config keys that differ.

A run folder (``train``, ``run``) gives its test metrics (``result.json``); a cross-validation folder
(``train --cv K``) the mean ± std over its folds' test parts (``cv.json``) and its fold1's config.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import flatten_config, load_config, same_setting
from ..errors import ConfigError, DataError, UsageError
from ..metrics import METRIC_KEYS
from ..report.html import Section, paragraph, sortable_table, table, write_page
from ..runs import RunDir

log = logging.getLogger(__name__)

PAGE = "compare.html"  # what ``--out DIR`` writes
# Where a run cached its frozen activations: differs between folders, never changes a result.
IGNORED_KEYS = ("train.cache_dir",)
ABSENT = "—"


def lower_is_better(metric: str) -> bool:
    """Losses (hamming_loss, bce_loss) rank low-first, every score high-first."""
    return metric.endswith("_loss")


@dataclass(frozen=True)
class RunSummary:
    """One compared folder: its test metrics (a CV's fold mean, with ``std``) and its flattened config."""

    folder: str
    kind: str
    metrics: dict[str, float]
    std: dict[str, float] | None
    config: dict[str, Any]

    def metric_cell(self, key: str) -> str:
        if key not in self.metrics:
            return ABSENT
        if self.std is None or key not in self.std:
            return f"{self.metrics[key]:.4f}"
        return f"{self.metrics[key]:.4f} ± {self.std[key]:.4f}"

    def config_cell(self, key: str) -> str:
        if key not in self.config:
            return ABSENT
        value = self.config[key]
        return value if isinstance(value, str) and value else json.dumps(value)


@dataclass(frozen=True)
class Comparison:
    runs: list[RunSummary]  # best first by ``sort``
    sort: str
    config_keys: list[str]  # the flattened config keys whose values differ between the runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a JSON object")
    return data


def _numbers(values: Any, where: Path) -> dict[str, float]:
    """The metrics of METRIC_KEYS in a mapping (others ignored); a mapping without any is not a result file."""
    found = {k: float(values[k]) for k in METRIC_KEYS if isinstance(values, dict) and isinstance(values.get(k), (int, float))}
    if not found:
        raise DataError(f"{where}: no test metrics in it ({', '.join(METRIC_KEYS[:3])}, ...)")
    return found


def _flat_config(path: Path) -> dict[str, Any]:
    """A run's saved config with today's defaults filled in (an older run lacks newer keys), flattened."""
    if not path.is_file():
        raise DataError(f"{path}: not found (every run folder saves its config there)")
    try:
        return flatten_config(load_config(path).to_dict())
    except ConfigError as e:
        raise ConfigError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


def read_run(folder: Path | str) -> RunSummary:
    """A finished run (``result.json``: its test metrics) or a finished cross-validation (``cv.json``: mean ± std over folds)."""
    run = RunDir(folder)
    if not run.path.is_dir():
        raise UsageError(f"{run}: {'not a folder' if run.path.exists() else 'no such folder'} (give run or cross-validation folders)")
    if run.cv_summary.is_file():
        summary = _read_json(run.cv_summary)
        k = summary.get("k", len(summary.get("folds", [])))
        mean, std = _numbers(summary.get("mean"), run.cv_summary), _numbers(summary.get("std"), run.cv_summary)
        return RunSummary(str(folder), f"{k}-fold CV", mean, std, _flat_config(run.fold(0).config))
    if run.result.is_file():
        metrics = _read_json(run.result).get("metrics")
        if not isinstance(metrics, dict) or "test" not in metrics:
            raise DataError(f"{run.result}: no test metrics (a run trained without a test part, e.g. a refit, cannot be compared)")
        return RunSummary(str(folder), "run", _numbers(metrics["test"], run.result), None, _flat_config(run.config))
    if run.fold(0).path.is_dir():
        raise UsageError(f"{run}: an unfinished cross-validation (no {run.cv_summary.name} yet; rerun its `scenetag train --cv K --out {run}`, finished folds are reused)")
    if run.is_started():
        raise UsageError(f"{run}: an unfinished run (no {run.result.name} yet; continue it with `scenetag train --resume {run}`)")
    raise UsageError(f"{run}: neither a finished run (no {run.result.name}) nor a finished cross-validation (no {run.cv_summary.name})")


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Flattened keys whose values are not the same in every config (absent counts as a value), in config order."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    missing = object()
    return [k for k in keys if k not in IGNORED_KEYS and any(not same_setting(c.get(k, missing), configs[0].get(k, missing)) for c in configs[1:])]


def sort_runs(runs: Sequence[RunSummary], metric: str) -> list[RunSummary]:
    """Best first by ``metric`` (high-first, low-first for losses); runs without it (or NaN) last; ties keep the given order."""

    def key(run: RunSummary) -> tuple[bool, float]:
        value = run.metrics.get(metric, math.nan)
        if math.isnan(value):
            return True, 0.0
        return False, value if lower_is_better(metric) else -value

    return sorted(runs, key=key)


def compare(folders: Sequence[Path | str], sort: str = METRIC_KEYS[0]) -> Comparison:
    """Read every folder (each error names its folder), order them by ``sort`` and find the config keys that differ."""
    if len(folders) < 2:
        raise UsageError(f"compare needs at least 2 run or cross-validation folders, got {len(folders)}")
    if sort not in METRIC_KEYS:
        raise UsageError(f"cannot sort by {sort!r}: choose one of {', '.join(METRIC_KEYS)}")
    seen: dict[Path, str] = {}
    for folder in folders:
        if Path(folder).resolve() in seen:
            raise UsageError(f"{folder}: given twice (as {seen[Path(folder).resolve()]})")
        seen[Path(folder).resolve()] = str(folder)
    runs = [read_run(f) for f in folders]
    log.debug("compared %s", ", ".join(r.folder for r in runs))
    return Comparison(sort_runs(runs, sort), sort, differing_keys([r.config for r in runs]))


def _order(cmp: Comparison) -> str:
    return f"sorted by {cmp.sort}, {'lower' if lower_is_better(cmp.sort) else 'higher'} first"


def text_lines(cmp: Comparison) -> list[str]:
    """The comparison as a plain-text table: one column per run, the metrics, then the config keys that differ."""
    rows = [["kind"] + [r.kind for r in cmp.runs]] + [[k] + [r.metric_cell(k) for r in cmp.runs] for k in METRIC_KEYS]
    config = [[k] + [r.config_cell(k) for r in cmp.runs] for k in cmp.config_keys]
    header = [""] + [r.folder for r in cmp.runs]
    widths = [max(len(row[i]) for row in [header] + rows + config) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    lines = [f"test metrics of {len(cmp.runs)} runs (cross-validations: mean ± std over folds), {_order(cmp)}:", line(header)]
    lines += [line(r) for r in rows]
    if config:
        lines += ["config keys that differ:"] + [line(r) for r in config]
    else:
        lines.append(f"the configs are the same (apart from {', '.join(IGNORED_KEYS)})")
    return lines


def write_report(cmp: Comparison, out: Path | str) -> Path:
    """``OUT/compare.html``: the metrics table (sortable by clicking a column header) and the config keys that differ."""
    header = ["run", "kind", *METRIC_KEYS]
    rows = [[r.folder, r.kind, *(r.metric_cell(k) for k in METRIC_KEYS)] for r in cmp.runs]
    ascending = ["run", "kind", *(k for k in METRIC_KEYS if lower_is_better(k))]
    caption = f"Test metrics; a cross-validation shows the mean ± std over its folds' test parts. {_order(cmp).capitalize()}; click a column header to sort by it."
    sections = [Section("Test metrics", sortable_table(header, rows, ascending=ascending, sorted_by=cmp.sort), caption)]
    if cmp.config_keys:
        body = table(["config key", *(r.folder for r in cmp.runs)], [[k, *(r.config_cell(k) for r in cmp.runs)] for k in cmp.config_keys])
        sections.append(Section("Config differences", body, "Only the keys whose values differ (a cross-validation's from its fold1 config.yaml); one column per run, in the order above."))
    else:
        sections.append(Section("Config differences", paragraph(f"None: the runs' configs are the same (apart from {', '.join(IGNORED_KEYS)}).")))
    return write_page(Path(out) / PAGE, f"Comparison of {len(cmp.runs)} runs", sections, [", ".join(r.folder for r in cmp.runs)])

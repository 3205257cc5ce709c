"""``scenetag audit``: which given labels are probably wrong, from out-of-fold probabilities.

Every image is scored by the fold model that never trained on it (a K-fold
cross-validation, trained here or reused with ``--from-cv``); thresholds are tuned
on those out-of-fold probabilities; every (image, label) pair gets a score
(:mod:`scenetag.data.label_issues`). Writes, into the audit folder:
``scores.csv`` (every pair), ``suspects.csv`` (the suspected pairs, most suspicious
first), ``report.html`` (a filterable gallery of the suspects, counts per label and
kind), ``labels.suggested.csv`` (the labels with every suspect accepted, for
``train --labels``; ``scenetag review`` is the careful way) and ``audit.json`` (what
was audited, how, and the counts).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import Config, load_config
from ..data.images import thumbnail_jpeg
from ..data.splits import Split
from ..data.label_issues import RANKINGS, SUSPECT_KINDS, Suspect, corrected, cutoffs, pair_scores, suspects
from ..data.layouts import write_labels_csv
from ..errors import ConfigError, DataError
from ..io import atomic_write_csv, atomic_write_json
from ..metrics import tune_thresholds
from ..report.html import Card, Section, gallery, paragraph, table, write_page
from ..runs import AuditDir, RunDir
from ..train.cv import cross_validate
from ..train.refit import out_of_fold
from ..train.rundata import load_run_data

log = logging.getLogger(__name__)
SUSPECT_COLUMNS = ["image", "label", "kind", "score", "given", "probability"]
GALLERY_LIMIT = 300  # thumbnails in report.html (suspects.csv lists them all)


def audit(cfg: Config, out: Path | str, k: int = 5, ranking: str = RANKINGS[0], from_cv: Path | str | None = None, progress: bool = True,
          min_score: float | None = None, accept_above: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Train (or reuse) a K-fold cross-validation and audit its out-of-fold probabilities into ``out``."""
    folder = AuditDir(out)
    if from_cv is None:
        cross_validate(cfg, folder.cv.path, k, progress)
        from_cv = folder.cv.path
    return audit_from_cv(from_cv, folder, ranking, min_score, accept_above)


def _finished_cv(cv: RunDir) -> int:
    if not cv.cv_summary.is_file():
        raise ConfigError(f"{cv}: not a finished cross-validation (no {cv.cv_summary.name}); run `scenetag train --cv K --out {cv}` first")
    return int(json.loads(cv.cv_summary.read_text())["k"])


def audit_from_cv(cv_dir: Path | str, folder: AuditDir, ranking: str = RANKINGS[0], min_score: float | None = None, accept_above: float | None = None) -> dict[str, Any]:
    """Score every (image, label) pair of a finished cross-validation's data; write the audit files.

    ``min_score`` / ``accept_above``: the suspect and accept cut-offs (None: the ranking's defaults).
    """
    cv = RunDir(cv_dir)
    min_score, accept_above = cutoffs(ranking, min_score, accept_above)
    k = _finished_cv(cv)
    ds, _ = load_run_data(cv.fold(0))
    ids = np.concatenate([Split.read(cv.fold(i).split).test for i in range(k)])  # out_of_fold's order
    if sorted(ids.tolist()) != list(range(len(ds))):
        raise DataError(f"{cv}: its test folds do not cover every image once; audit needs a K-fold cross-validation of the whole data")
    given, probs = out_of_fold(cv, k, ds.labels, ds.classes)
    thresholds = tune_thresholds(given, probs, load_config(cv.fold(0).config).train.threshold_mode)
    scores, suspected = pair_scores(given, probs, thresholds, ranking, min_score)
    paths = [str(ds.paths[i]) for i in ids]
    found = suspects(paths, ds.classes, given, probs, scores, suspected)
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(folder.scores, [SUSPECT_COLUMNS] + [_row(s) for s in suspects(paths, ds.classes, given, probs, scores, np.ones_like(suspected))])
    atomic_write_csv(folder.suspects, [SUSPECT_COLUMNS] + [_row(s) for s in found])
    suggested = ds.labels.copy()
    accepted = suspected & (scores > accept_above)
    suggested[ids] = corrected(given, accepted)  # out-of-fold order back to the data's
    write_labels_csv(folder.suggested_labels, ds.paths, ds.classes, suggested)
    counts = count_by_label_and_kind(found, ds.classes)
    summary = {"cv": str(cv.path.resolve()), "k": k, "ranking": ranking, "min_score": min_score, "accept_above": accept_above, "suggested_changes": int(accepted.sum()), "images": len(ds), "pairs": int(given.size), "suspects": len(found),
               "counts": counts, "thresholds": dict(zip(ds.classes, thresholds.tolist()))}  # fmt: skip
    write_report(folder.report, found, counts, summary)
    atomic_write_json(folder.summary, summary)
    log.info("audit: %d suspected label errors among %d images x %d labels (%s ranking)", len(found), len(ds), len(ds.classes), ranking)
    return summary | {"folder": str(folder.path)}


def _row(s: Suspect) -> list[Any]:
    return [s.image, s.label, s.kind, f"{s.score:.6f}", int(s.given), f"{s.probability:.6f}"]


def count_by_label_and_kind(found: Sequence[Suspect], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    return {c: {kind: sum(1 for s in found if s.label == c and s.kind == kind) for kind in SUSPECT_KINDS} for c in classes}


def write_report(path: Path, found: Sequence[Suspect], counts: dict[str, dict[str, int]], summary: dict[str, Any]) -> Path:
    """report.html: counts per label and kind, then the suspects as a gallery filterable by label and kind."""
    cards = [
        Card(thumbnail_jpeg(s.image), [Path(s.image).name, f"{'add' if s.kind == 'missing' else 'remove'} {s.label}?", f"probability {s.probability:.2f}, score {s.score:.2f}"], {"label": s.label, "kind": s.kind})
        for s in found[:GALLERY_LIMIT]
    ]
    shown = f"the {len(cards)} most suspicious of {len(found)}" if len(found) > len(cards) else f"all {len(found)}"
    sections = [
        Section("Suspects by label and kind", table(["label", *SUSPECT_KINDS], [[c, *(v[k] for k in SUSPECT_KINDS)] for c, v in counts.items()])),
        Section("Suspects", gallery(cards, ["label", "kind"]) if cards else paragraph("No suspected label errors."), f"{shown}, most suspicious first; missing = label not given but shown, extra = label given but not shown"),
    ]
    subtitle = [f"{summary['images']} images x {len(counts)} labels, out-of-fold probabilities of {summary['cv']} ({summary['k']} folds), {summary['ranking']} ranking"]
    return write_page(path, "Suspected label errors", sections, subtitle)

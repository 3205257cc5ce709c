"""Region evidence at test time, on the fine-tuned fold models of a K-fold run (issue 19, a first measurement).

Each fold's ``best.pt`` scores, besides the image and its flip (today's TTA),
four overlapping 2/3-size corner crops (``region_*`` views, resized like the
image). Aggregations of the per-view probabilities, each with per-label
thresholds tuned on the fold's val part under the same aggregation, scored on
the fold's test part: ``full`` (mean of image and flip: today's prediction),
``mean6`` (mean of all six views), ``full+max`` (mean of ``full`` and the
per-label max over the regions: a label needs only one region), ``max6``.
Every view is computed once for every image through the activation cache
(the fold models' frozen part is the pretrained network), shared by the folds.
Also counts errors by kind (missed / extra per label) on the test folds.

    python bench/region_tta_cv.py runs/cv5 [--json docs/figures/region_tta_cv5.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from scenetag.checkpoint import load_model
from scenetag.config import load_config
from scenetag.data.layouts import load_dataset
from scenetag.data.preprocessing import REGION_KINDS, Preprocessing
from scenetag.data.splits import Split
from scenetag.io import atomic_write_json
from scenetag.metrics import METRIC_KEYS, apply_thresholds, errors_by_kind, multilabel_metrics, tune_thresholds
from scenetag.runs import RunDir
from scenetag.train.batches import view_logits
from scenetag.train.cache import build_cache
from scenetag.train.setup import model_identity, phase_boundaries

VIEWS = ["orig", "flip", *REGION_KINDS]
AGGREGATIONS = {
    "full": lambda p: p[:, :2].mean(1),
    "mean6": lambda p: p.mean(1),
    "full+max": lambda p: 0.5 * p[:, :2].mean(1) + 0.5 * p[:, 2:].max(1),
    "max6": lambda p: p.max(1),
}


def fold_view_probs(fold: RunDir, ds, cache_dir: Path) -> np.ndarray:
    """Probabilities of fold's best.pt on every image x view, shape (images, views, classes)."""
    cfg = load_config(fold.config)
    model, meta = load_model(fold.best)
    acts = build_cache(model, model_identity(cfg), ds, VIEWS, taps=phase_boundaries(model, cfg), pp=Preprocessing.from_dict(meta["preprocessing"]),
                       seed=cfg.train.seed, cache_dir=cache_dir, progress=False)  # fmt: skip
    logits = view_logits(model, acts, int(meta["boundary"]), np.arange(len(ds)))
    return 1 / (1 + np.exp(-logits))


def stats(rows: list[dict]) -> dict:
    return {"mean": {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}, "std": {k: float(np.std([r[k] for r in rows])) for k in METRIC_KEYS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv", help="a finished `scenetag train --cv K` folder")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cv = RunDir(args.cv)
    k = json.loads(cv.cv_summary.read_text())["k"]
    cfg = load_config(cv.fold(0).config)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    rows = {name: [] for name in AGGREGATIONS}
    kinds = {name: [] for name in AGGREGATIONS}
    for i in range(k):
        fold = cv.fold(i)
        split = Split.read(fold.split)
        probs = fold_view_probs(fold, ds, cv.cache)
        for name, agg in AGGREGATIONS.items():
            val, test = agg(probs[split.val]), agg(probs[split.test])
            thr = tune_thresholds(ds.labels[split.val], val, cfg.train.threshold_mode)
            rows[name].append(multilabel_metrics(ds.labels[split.test], test, thr, ds.classes))
            kinds[name].append(errors_by_kind(ds.labels[split.test], apply_thresholds(test, thr), ds.classes))
        print(f"fold {i + 1}/{k}: " + "  ".join(f"{n} {rows[n][-1]['samples_f1']:.4f}/{rows[n][-1]['mAP']:.4f}" for n in AGGREGATIONS), flush=True)
    out = {"command": "python bench/region_tta_cv.py " + " ".join(sys.argv[1:]), "k": k, "views": VIEWS}
    for name in AGGREGATIONS:
        total = {c: {e: sum(f[c][e] for f in kinds[name]) for e in ("missed", "extra")} for c in ds.classes}
        out[name] = stats(rows[name]) | {"errors_by_kind": total}
        m, s = out[name]["mean"], out[name]["std"]
        print(f"{name:<9} " + "  ".join(f"{key} {m[key]:.4f}±{s[key]:.4f}" for key in ("samples_f1", "micro_f1", "hamming_loss", "mAP")) + "  missed " + " ".join(f"{c} {v['missed']}" for c, v in total.items()))
    if args.json:
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

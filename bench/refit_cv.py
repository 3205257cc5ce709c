"""What refitting on every labelled image buys, measured on a finished K-fold run (``scenetag train --cv K``).

For each fold the evaluated model (``foldN/best.pt``) was trained on the fold's
train part, its epoch selected and its thresholds tuned on the val part. The
refit (``foldN/refit_UNTIL/``) repeats that schedule (:func:`scenetag.train.refit.refit_config`)
on train + val -- everything but the fold's test part, as ``scenetag run`` refits on
everything but nothing -- and is scored on the same test fold with:

- ``val``: the evaluated model's thresholds (tuned on its val part): what final.pt ships;
- ``oof``: thresholds tuned on the out-of-fold test predictions of the *other* folds'
  evaluated models (what ``--cv K`` gives when every image has an out-of-fold prediction);
- ``0.5``: untuned.

Prints mean ± std over folds for the evaluated models and each refit variant and,
with ``--json``, writes them (docs/figures/refit_cv5.json).

    python bench/refit_cv.py runs/cv5 [--until epoch|phase|all] [--json docs/figures/refit_cv5_UNTIL.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from scenetag.config import config_diff, load_config, with_absolute_paths
from scenetag.data.layouts import load_dataset
from scenetag.data.splits import Split
from scenetag.infer.outputs import read_probabilities
from scenetag.io import atomic_write_json
from scenetag.metrics import METRIC_KEYS, multilabel_metrics, tune_thresholds
from scenetag.runs import RunDir
from scenetag.train.recipe import train
from scenetag.train.refit import DEFAULT_UNTIL, REFIT_UNTIL, read_history, refit_config


def refit_fold(cv: RunDir, fold: RunDir, until: str) -> tuple[np.ndarray, float]:
    """Train (or reuse) the fold's refit; its test-fold probabilities and training seconds."""
    cfg = load_config(fold.config)
    rcfg = refit_config(cfg, read_history(fold), until)
    refit = RunDir(fold.path / f"refit_{until}")
    rcfg.train.cache_dir = str(Path(cfg.train.cache_dir or cv.cache).absolute())  # the folds' shared cache of every image
    split = Split.read(fold.split)
    measured = Split(np.concatenate([split.train, split.val]), np.array([], dtype=np.int64), split.test)
    same = [other for u in REFIT_UNTIL if (other := RunDir(fold.path / f"refit_{u}")).is_finished() and not config_diff(load_config(other.config), with_absolute_paths(rcfg))]
    if same:
        refit = same[0]  # another variant's refit with this very schedule (the selected epoch ended its phase)
    elif not refit.is_finished():
        train(rcfg, refit, progress=False, split=measured, cache_all_images=True)
    seconds = json.loads(refit.result.read_text())["train_seconds"]
    classes = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format).classes
    return read_probabilities(refit.test_predictions, classes), seconds


def stats(rows: list[dict]) -> dict:
    return {"mean": {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}, "std": {k: float(np.std([r[k] for r in rows])) for k in METRIC_KEYS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv", help="a finished `scenetag train --cv K` folder")
    ap.add_argument("--until", choices=REFIT_UNTIL, default=DEFAULT_UNTIL, help="where the refit stops (see scenetag.train.refit.refit_config)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    cv = RunDir(args.cv)
    k = json.loads(cv.cv_summary.read_text())["k"]
    folds = [cv.fold(i) for i in range(k)]
    cfg = load_config(folds[0].config)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    splits = [Split.read(f.split) for f in folds]
    evaluated = [read_probabilities(f.test_predictions, ds.classes) for f in folds]
    rows: dict[str, list[dict]] = {"evaluated": [], "refit_val": [], "refit_oof": [], "refit_0.5": []}
    seconds = []
    for i, fold in enumerate(folds):
        t0 = time.time()
        probs, train_s = refit_fold(cv, fold, args.until)
        seconds.append(train_s)
        y = ds.labels[splits[i].test]
        others = [j for j in range(k) if j != i]
        oof = tune_thresholds(ds.labels[np.concatenate([splits[j].test for j in others])], np.concatenate([evaluated[j] for j in others]), cfg.train.threshold_mode)
        val_thr = np.asarray(json.loads(fold.result.read_text())["thresholds"])
        rows["evaluated"].append(multilabel_metrics(y, evaluated[i], val_thr, ds.classes))
        for name, thr in (("refit_val", val_thr), ("refit_oof", oof), ("refit_0.5", 0.5)):
            rows[name].append(multilabel_metrics(y, probs, thr, ds.classes))
        print(f"fold {i + 1}/{k} ({time.time() - t0:.0f}s): evaluated {rows['evaluated'][-1]['samples_f1']:.4f}  refit val-thr {rows['refit_val'][-1]['samples_f1']:.4f}  oof-thr {rows['refit_oof'][-1]['samples_f1']:.4f}  0.5 {rows['refit_0.5'][-1]['samples_f1']:.4f}", flush=True)
    out = {name: stats(r) | {"folds": [{key: m[key] for key in METRIC_KEYS} for m in r]} for name, r in rows.items()}
    out |= {"until": args.until, "command": "python bench/refit_cv.py " + " ".join(sys.argv[1:]), "k": k, "refit_train_seconds": seconds, "evaluated_train_seconds": json.loads(cv.cv_summary.read_text())["seconds"]}
    for name in rows:
        print(f"{name:<10} " + "  ".join(f"{key} {out[name]['mean'][key]:.4f}±{out[name]['std'][key]:.4f}" for key in ("samples_f1", "micro_f1", "hamming_loss", "mAP")))
    if args.json:
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

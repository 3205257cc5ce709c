"""What an ensemble of fine-tuned models buys, measured on finished K-fold runs.

Give two or more ``scenetag train --cv K`` output folders trained with the same
seed (so fold ``i`` has the same train/val/test split in each). For every fold
the script predicts the val and test images with each fold's ``best.pt``
(flip TTA and temperatures as stored; probabilities are kept next to the
checkpoint as ``probs_val.npy`` / ``probs_test.npy``), averages the members'
probabilities, tunes per-label thresholds on the averaged val probabilities and
reports the test fold's metrics. Prints mean ± std over folds for each single
run and for the ensemble.

With ``--checkpoint`` each fold's ensemble is instead built as the product
ships it (``scenetag.ensemble.make_ensemble``: one EnsembleNet, the smaller
member fed a bilinear resize of the larger input, thresholds tuned on the
fold's val part) and the test metrics are those of that checkpoint.

With ``--oracle`` it also prints a ceiling, not a result: the averaged
probabilities scored with thresholds tuned on the test fold itself. No honest
decision rule on these probabilities can beat it.

    python bench/ensemble_cv.py runs/cv5 runs/cv5_best [--checkpoint] [--oracle]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from scenetag.config import load_config
from scenetag.data import load_dataset
from scenetag.workflows.ensemble import make_ensemble
from scenetag.metrics import METRIC_KEYS, multilabel_metrics, tune_thresholds
from scenetag.infer.predictor import Predictor
from scenetag.io import atomic_write_json
from scenetag.runs import RunDir



def fold_probs(fold: RunDir, ds, split: dict, which: str) -> np.ndarray:
    """Probabilities of one fold's model on its ``val`` or ``test`` images (computed once, then read back)."""
    cached = fold / f"probs_{which}.npy"
    if cached.is_file():
        return np.load(cached)
    probs = Predictor(fold.best).dataset_probabilities(ds.subset(split[which]))
    np.save(cached, probs)
    return probs


def stats(rows: list[dict]) -> dict:
    """Mean and (population) std over folds of every metric, as cv.json has them."""
    return {"mean": {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}, "std": {k: float(np.std([r[k] for r in rows])) for k in METRIC_KEYS}, "k": len(rows)}


def summarise(rows: list[dict]) -> str:
    return "  ".join(f"{k} {np.mean([r[k] for r in rows]):.4f}±{np.std([r[k] for r in rows]):.4f}" for k in METRIC_KEYS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="K-fold output folders (same seed, same data)")
    ap.add_argument("--weights", type=float, nargs="*", help="one weight per run for the average (default equal)")
    ap.add_argument("--checkpoint", action="store_true", help="measure the shipped ensemble checkpoint of each fold (written to the first run's fold folder)")
    ap.add_argument("--oracle", action="store_true", help="also print the ceiling: thresholds tuned on the test fold itself")
    args = ap.parse_args()
    runs = [RunDir(r) for r in args.runs]
    cfg = load_config(runs[0].fold(0).config)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    k = json.loads(runs[0].cv_summary.read_text())["k"] if runs[0].cv_summary.is_file() else len(list(runs[0].path.glob("fold*")))
    w = np.asarray(args.weights or [1.0] * len(args.runs))
    w = w / w.sum()
    single: dict[Path, list[dict]] = {r: [] for r in args.runs}
    ens: list[dict] = []
    oracle: list[dict] = []
    t0 = time.time()
    for i in range(k):
        splits = [json.loads(r.fold(i).split.read_text()) for r in runs]
        if any(s != splits[0] for s in splits):
            raise SystemExit(f"{runs[0].fold(i)}: the runs do not share the same split (train them with the same seed)")
        split = splits[0]
        y_val, y_test = ds.labels[split["val"]], ds.labels[split["test"]]
        pv = {r: fold_probs(RunDir(r).fold(i), ds, split, "val") for r in args.runs}
        pt = {r: fold_probs(RunDir(r).fold(i), ds, split, "test") for r in args.runs}
        for r in args.runs:
            single[r].append(multilabel_metrics(y_test, pt[r], tune_thresholds(y_val, pv[r])))
        avg_v = sum(wi * pv[r] for wi, r in zip(w, args.runs))
        avg_t = sum(wi * pt[r] for wi, r in zip(w, args.runs))
        if args.oracle:
            oracle.append(multilabel_metrics(y_test, avg_t, tune_thresholds(y_test, avg_t)))
        if args.checkpoint:
            first = runs[0].fold(i)
            res = make_ensemble([r.fold(i).best for r in runs], first.ensemble, weights=list(w), tune_on=first, progress=False)
            ens.append(res["metrics"]["test"])
        else:
            ens.append(multilabel_metrics(y_test, avg_t, tune_thresholds(y_val, avg_v)))
        print(f"fold {i + 1}: ensemble samples-F1 {ens[-1]['samples_f1']:.4f}  ({time.time() - t0:.0f}s)", flush=True)
    for r in args.runs:
        print(f"{r}: {summarise(single[r])}")
    print(f"ensemble {[str(r) for r in args.runs]} weights {np.round(w, 3).tolist()}: {summarise(ens)}")
    if oracle:
        print(f"ceiling (thresholds tuned on the test folds themselves, not a result): {summarise(oracle)}")
    out = runs[0] / ("ensemble_cv_checkpoint.json" if args.checkpoint else "ensemble_cv.json")
    atomic_write_json(out, {
        "runs": [str(r) for r in args.runs], "weights": np.round(w, 6).tolist(), "checkpoint": args.checkpoint, "seconds": round(time.time() - t0, 1),
        "members": {str(r): stats(single[r]) for r in args.runs}, "ensemble": stats(ens), "ceiling": stats(oracle) if oracle else None,
        "command": "python bench/ensemble_cv.py " + " ".join(sys.argv[1:]),
    })  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

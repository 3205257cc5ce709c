"""Distillation measured on K folds: a Lite0 student of each fold's ensemble, scored on the fold's test part.

Give a finished ``scenetag train --cv K`` folder whose folds hold an ``ensemble.pt``
(``bench/ensemble_cv.py --checkpoint`` writes them: fold ``i``'s Lite0 and Lite2
models, thresholds tuned on the fold's val part). Fold ``i``'s student is that
folder's recipe with ``train.teacher`` = fold ``i``'s ensemble and
``train.teacher_weight`` = ``--weight``, trained on the same train part (the teacher
never saw the fold's test part), its epoch and thresholds chosen on the same val
part. All folds share the K-fold folder's activation cache.

    python bench/distill_cv.py runs/cv5 --weight 0.5 --out runs/distill_w0.5 [--json docs/figures/distill_cv5_w0.5.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scenetag.config import load_config
from scenetag.data.splits import Split
from scenetag.io import atomic_write_json
from scenetag.runs import RunDir
from scenetag.train.cv import summarise_folds
from scenetag.train.recipe import train


def student_fold(cv: RunDir, out: RunDir, i: int, weight: float) -> dict:
    """Train (or reuse) fold ``i``'s student; its result (test metrics, seconds)."""
    fold, student = cv.fold(i), out.fold(i)
    if student.is_finished():
        return json.loads(student.result.read_text())
    if not fold.ensemble.is_file():
        raise SystemExit(f"{fold.ensemble} is missing: build the fold ensembles first (bench/ensemble_cv.py --checkpoint)")
    overrides = [f"train.teacher={fold.ensemble.absolute()}", f"train.teacher_weight={weight}", f"train.cache_dir={cv.cache.absolute()}"]
    cfg = load_config(fold.config, overrides)
    return train(cfg, student, progress=False, split=Split.read(fold.split), cache_all_images=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv", help="a finished `scenetag train --cv K` folder with foldN/ensemble.pt")
    ap.add_argument("--weight", type=float, required=True, help="train.teacher_weight of the students")
    ap.add_argument("--out", required=True, help="folder for the students (one run folder per fold)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    cv, out = RunDir(args.cv), RunDir(args.out)
    k = json.loads(cv.cv_summary.read_text())["k"]
    per_fold = []
    for i in range(k):
        t0 = time.time()
        per_fold.append(student_fold(cv, out, i, args.weight))
        print(f"fold {i + 1}/{k} ({time.time() - t0:.0f}s): samples-F1 {per_fold[-1]['metrics']['test']['samples_f1']:.4f}  mAP {per_fold[-1]['metrics']['test']['mAP']:.4f}", flush=True)
    summary = summarise_folds(k, per_fold) | {"teacher_weight": args.weight, "command": "python bench/distill_cv.py " + " ".join(sys.argv[1:])}
    print("  ".join(f"{key} {summary['mean'][key]:.4f}±{summary['std'][key]:.4f}" for key in ("samples_f1", "micro_f1", "hamming_loss", "mAP")))
    atomic_write_json(out.cv_summary, summary)
    if args.json:
        atomic_write_json(args.json, summary)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""K-fold map of frozen-feature models: which backbone / resolution / views / head is worth fine-tuning.

Pooled features of every image and view are computed once per backbone (ONNX
Runtime, reused from ``--cache-dir``), then each fold fits a probe on the
training images' views, tunes per-label thresholds on out-of-fold predictions
of the training part (never on the test fold) and reports the test fold's
metrics, averaged over views (test-time augmentation). Prints mean ± std.

    python bench/probe_cv.py --specs lite0:224 lite2:260 --combine concat mean
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scenetag.train.cache import build_cache
from scenetag.data import kfold_indices, load_dataset
from scenetag.metrics import METRIC_KEYS, multilabel_metrics, tune_thresholds
from scenetag.models.net import build_model, model_preprocessing




def features(ds, spec: str, views: list[str], resize: str, cache_dir: Path | None, seed: int) -> np.ndarray:
    """(n_images, n_views, D) pooled features for ``backbone:size``."""
    name, size = spec.split(":")
    model = build_model(name, quiet=True).eval()
    pp = model_preprocessing(model, int(size))
    pp = dataclasses.replace(pp, resize=resize)
    tap = len(model.pieces())
    t0 = time.time()
    cache = build_cache(model, {"backbone": name, "probe": True}, ds, views, [tap], pp, seed, cache_dir, dtype="float32", progress=False)
    print(f"  features {spec} {resize} {len(views)} views: {time.time() - t0:.0f}s", flush=True)
    return np.asarray(cache.acts[tap], dtype=np.float32)


def probe_probs(f: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test-fold probabilities and out-of-fold probabilities of the training part (for thresholds)."""
    n_views = f.shape[1]

    def fit_predict(a, b):
        # One standardised logistic regression per label, fitted on every view of the training images.
        probe = make_pipeline(StandardScaler(), MultiOutputClassifier(LogisticRegression(C=c, max_iter=2000)))
        probe.fit(f[a].reshape(len(a) * n_views, -1), np.repeat(y[a], n_views, 0))
        p = np.stack([q[:, 1] for q in probe.predict_proba(f[b].reshape(len(b) * n_views, -1))], 1)
        return p.reshape(len(b), n_views, -1).mean(1)

    oof = np.zeros((len(tr), y.shape[1]))
    for a, b in KFold(3, shuffle=True, random_state=seed).split(tr):
        oof[b] = fit_predict(tr[a], tr[b])
    return fit_predict(tr, te), oof


def summarise(name: str, rows: list[dict]) -> None:
    parts = [f"{k} {np.mean([r[k] for r in rows]):.4f}±{np.std([r[k] for r in rows]):.4f}" for k in METRIC_KEYS]
    print(f"{name:40s} " + "  ".join(parts), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("--specs", nargs="+", default=["lite0:224"])
    ap.add_argument("--views", default="orig,flip")
    ap.add_argument("--resize", default="squash", choices=["squash", "crop"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--C", type=float, nargs="+", default=[0.05])
    ap.add_argument("--combine", nargs="*", default=[], choices=["concat", "mean"])
    ap.add_argument("--cache-dir", default="runs/.probe_cache")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    ds = load_dataset(args.data)
    y = ds.labels.astype(np.uint8)
    views = args.views.split(",")
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    feats = {s: features(ds, s, views, args.resize, cache_dir, args.seed) for s in args.specs}
    folds = kfold_indices(y, args.folds, args.seed)
    for c in args.C:
        probs: dict[str, list] = {}
        for s in args.specs:
            probs[s] = [probe_probs(feats[s], y, tr, te, c, args.seed) for tr, te in folds]
        if "concat" in args.combine and len(args.specs) > 1:
            cat = np.concatenate([feats[s] for s in args.specs], -1)
            probs["concat(" + "+".join(args.specs) + ")"] = [probe_probs(cat, y, tr, te, c, args.seed) for tr, te in folds]
        if "mean" in args.combine and len(args.specs) > 1:
            probs["mean(" + "+".join(args.specs) + ")"] = [
                tuple(np.mean([probs[s][i][j] for s in args.specs], 0) for j in range(2)) for i in range(len(folds))
            ]
        for name, per_fold in probs.items():
            rows = []
            for (tr, te), (p_te, oof) in zip(folds, per_fold):
                th = tune_thresholds(y[tr], oof)
                rows.append(multilabel_metrics(y[te], p_te, th))
            summarise(f"{name} C={c} {args.resize} {args.views}", rows)


if __name__ == "__main__":
    main()

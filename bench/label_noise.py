"""How well the audit finds label errors planted in the default data, and what they cost the recipe (issue 15).

Seeded corruption of the default labels: ``--missing`` of the positive (image, label)
pairs are removed and ``--extra`` of the negative ones added. The recipe trains on
the corrupted labels on the same K folds as ``scenetag train --cv K`` on the clean
labels (folds cut from the clean labels, so ``runs/cv5`` is the clean baseline); then
for each ranking of the audit (on the out-of-fold probabilities, thresholds tuned on
them): precision among the top N pairs (N = pairs planted), recall among the top 2N,
the AUROC of the score for "this pair was planted", and how many suspects it flags.
Also: each fold's test part scored on its *original* labels (samples-F1 lost to the noise),
for the default recipe on the noisy labels, for each ``--variant`` (a robust-loss
option), and for the recipe trained on the audit-corrected labels (the noisy labels
with the default ranking's suspects above its accept cut-off flipped, as ``labels.suggested.csv``).

    python bench/label_noise.py --out runs/label_noise [--k 5] [--missing 0.10] [--extra 0.03] [--clean runs/cv5]
        [--variant boot:train.bootstrap=0.3] [--variant ignore:train.ignore_negatives_above=0.7] [--json docs/figures/label_noise.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from scenetag.config import load_config
from scenetag.data.label_issues import RANKINGS, corrected, cutoffs, pair_scores
from scenetag.data.layouts import write_labels_csv
from scenetag.data.layouts import load_dataset
from scenetag.data.splits import kfold_splits
from scenetag.infer.outputs import read_probabilities
from scenetag.io import atomic_write_json
from scenetag.metrics import METRIC_KEYS, multilabel_metrics, tune_thresholds
from scenetag.runs import RunDir
from scenetag.train.cv import summarise_folds
from scenetag.train.recipe import train
from scenetag.train.refit import out_of_fold


def corrupt(labels: np.ndarray, missing: float, extra: float, seed: int) -> np.ndarray:
    """(noisy labels, planted mask): ``missing`` of the positives dropped, ``extra`` of the negatives added."""
    rng = np.random.default_rng(seed)
    planted = np.zeros(labels.shape, dtype=bool)
    for value, share in ((1, missing), (0, extra)):
        rows, cols = np.nonzero(labels == value)
        pick = rng.choice(len(rows), int(round(share * len(rows))), replace=False)
        planted[rows[pick], cols[pick]] = True
    return np.where(planted, 1 - labels, labels).astype(np.uint8), planted


def ranking_quality(scores: np.ndarray, suspected: np.ndarray, planted: np.ndarray) -> dict:
    n = int(planted.sum())
    order = np.argsort(-scores, axis=None, kind="stable")
    flat = planted.ravel()
    return {"precision_at_n": float(flat[order[:n]].mean()), "recall_at_2n": float(flat[order[: 2 * n]].sum() / n),
            "auroc": float(roc_auc_score(flat, scores.ravel())), "suspects": int(suspected.sum()), "planted_among_suspects": int((suspected & planted).sum())}  # fmt: skip


CUTOFF_GRID = {"margin": (0.0, 0.25, 0.5, 0.75, 0.9), "cleanlab": (0.0, 0.5, 0.75, 0.9, 0.95)}


def cutoff_quality(scores: np.ndarray, suspected: np.ndarray, planted: np.ndarray, grid) -> list[dict]:
    """Suspects above each cut-off: how many, the share of them planted, the share of the planted among them."""
    rows = []
    for cut in grid:
        flagged = suspected & (scores > cut)
        hits = int((flagged & planted).sum())
        rows.append({"min_score": cut, "suspects": int(flagged.sum()), "planted_among": hits, "precision": hits / max(int(flagged.sum()), 1), "recall": hits / int(planted.sum())})
    return rows


def audit_quality(given: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, planted: np.ndarray) -> dict:
    """Per ranking: precision@N, recall@2N, AUROC, and the suspects at each cut-off of its grid."""
    out = {}
    for name in RANKINGS:
        scores, suspected = pair_scores(given, probs, thresholds, name)
        out[name] = ranking_quality(scores, suspected, planted) | {"defaults": dict(zip(("suspect_above", "accept_above"), cutoffs(name))), "cutoffs": cutoff_quality(scores, suspected, planted, CUTOFF_GRID[name])}
    return out


def disputed_on_clean_labels(clean_cv: RunDir, k: int, clean, threshold_mode: str) -> np.ndarray:
    """(images, labels) in data order: the pairs the recipe trained on the *original* labels disputes (margin > 0, out of fold).

    A top suspect that was not planted but is disputed here too is most likely an error (or an
    ambiguity) of the original labels, not a mistake of the audit.
    """
    given, probs = out_of_fold(clean_cv, k, clean.labels, clean.classes)
    ids = np.concatenate([np.asarray(json.loads(clean_cv.fold(i).split.read_text())["test"]) for i in range(k)])
    disputed = np.zeros(clean.labels.shape, dtype=bool)
    disputed[ids] = pair_scores(given, probs, tune_thresholds(given, probs, threshold_mode), "margin")[1]
    return disputed


def top_misses(scores: np.ndarray, planted: np.ndarray, disputed: np.ndarray) -> dict:
    """Among the top-N pairs (N = planted), the ones not planted, and how many of those the clean-label model disputes too."""
    top = np.argsort(-scores, axis=None, kind="stable")[: int(planted.sum())]
    misses = top[~planted.ravel()[top]]
    return {"not_planted": int(len(misses)), "disputed_on_original_labels": int(disputed.ravel()[misses].sum())}


def suggested_labels(noisy: np.ndarray, order: np.ndarray, given: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, accepted pairs in out-of-fold order): what `scenetag audit` writes as labels.suggested.csv with its defaults."""
    ranking = RANKINGS[0]
    suspect_above, accept_above = cutoffs(ranking)
    scores, suspected = pair_scores(given, probs, thresholds, ranking, suspect_above)
    accepted = suspected & (scores > accept_above)
    fixed = noisy.copy()
    fixed[order] = corrected(given, accepted)
    return fixed, accepted


def train_folds(cfg, out: RunDir, clean, k: int) -> tuple[list[dict], list[dict]]:
    """The recipe on the noisy labels, fold by fold (reused when finished): results, and test metrics on the original labels."""
    per_fold, on_original = [], []
    for i, split in enumerate(kfold_splits(clean.labels, k, cfg.train.seed, cfg.data.val, cfg.data.test)):
        fold = out.fold(i)
        result = json.loads(fold.result.read_text()) if fold.is_finished() else train(cfg, fold.path, progress=False, split=split, cache_all_images=True)
        per_fold.append(result | {"run_dir": str(fold.path)})
        probs = read_probabilities(fold.test_predictions, clean.classes)
        on_original.append(multilabel_metrics(clean.labels[split.test], probs, np.asarray(result["thresholds"]), clean.classes))
        print(f"{out}: fold {i + 1}/{k}: samples-F1 {per_fold[-1]['metrics']['test']['samples_f1']:.4f} on the noisy labels, {on_original[-1]['samples_f1']:.4f} on the original", flush=True)
    atomic_write_json(out.cv_summary, summarise_folds(k, per_fold, list(clean.classes)))
    return per_fold, on_original


def mean_std(rows: list[dict]) -> dict:
    return {"mean": {k: float(np.mean([m[k] for m in rows])) for k in METRIC_KEYS}, "std": {k: float(np.std([m[k] for m in rows])) for k in METRIC_KEYS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--missing", type=float, default=0.10)
    ap.add_argument("--extra", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean", default="runs/cv5", help="the clean-label K-fold run of the same recipe and seed (the F1 the noise costs is measured against it)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]", help="also train on the noisy labels with these overrides, e.g. boot:train.bootstrap=0.3")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides of every training here (e.g. a smaller recipe for a smoke test)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = RunDir(args.out)
    clean = load_dataset(args.data)
    noisy, planted = corrupt(clean.labels, args.missing, args.extra, args.seed)
    out.path.mkdir(parents=True, exist_ok=True)
    labels_csv = write_labels_csv(out.path / "labels.noisy.csv", clean.paths, clean.classes, noisy)
    base = [f"data.path={Path(args.data).resolve()}", f"data.labels={labels_csv.resolve()}", "data.format=csv", f"train.cache_dir={out.cache.resolve()}", *args.set]
    cv = RunDir(out.path / "noisy")
    _, on_original = train_folds(load_config(None, base), cv, clean, args.k)
    given, probs = out_of_fold(cv, args.k, noisy, clean.classes)
    order = np.concatenate([np.asarray(json.loads(cv.fold(i).split.read_text())["test"]) for i in range(args.k)])
    thresholds = tune_thresholds(given, probs, load_config(None, base).train.threshold_mode)
    rankings = audit_quality(given, probs, thresholds, planted[order])
    if RunDir(args.clean).cv_summary.is_file():
        disputed = disputed_on_clean_labels(RunDir(args.clean), args.k, clean, load_config(None, base).train.threshold_mode)[order]
        for name in RANKINGS:
            rankings[name]["top_n_misses"] = top_misses(pair_scores(given, probs, thresholds, name)[0], planted[order], disputed)
    clean_f1 = json.loads(RunDir(args.clean).cv_summary.read_text())["mean"]["samples_f1"] if RunDir(args.clean).cv_summary.is_file() else None
    training = {"noisy labels (default recipe)": mean_std(on_original)}
    fixed, accepted = suggested_labels(noisy, order, given, probs, thresholds)
    fixed_csv = write_labels_csv(out.path / "labels.suggested.csv", clean.paths, clean.classes, fixed)
    training["audit-corrected labels (labels.suggested.csv)"] = mean_std(train_folds(load_config(None, base + [f"data.labels={fixed_csv.resolve()}"]), RunDir(out.path / "corrected"), clean, args.k)[1])
    for spec in args.variant:
        name, overrides = spec.split(":", 1)
        training[name] = mean_std(train_folds(load_config(None, base + overrides.split(",")), RunDir(out.path / name), clean, args.k)[1])
    summary = {
        "command": "python bench/label_noise.py " + " ".join(sys.argv[1:]),
        "planted": {"missing": int((planted & (clean.labels == 1)).sum()), "extra": int((planted & (clean.labels == 0)).sum())},
        "rankings": rankings,
        "corrected_labels": {"ranking": RANKINGS[0], "pairs_flipped": int(accepted.sum()), "planted_fixed": int((accepted & planted[order]).sum()), "pairs_wrong_before": int(planted.sum()), "pairs_wrong_after": int((fixed != clean.labels).sum())},
        "clean_samples_f1": clean_f1,
        "training_on_noisy_labels_scored_on_original": training,
    }
    for name, q in rankings.items():
        print(f"{name:>9}: precision@N {q['precision_at_n']:.3f}  recall@2N {q['recall_at_2n']:.3f}  AUROC {q['auroc']:.3f}  suspects {q['suspects']} ({q['planted_among_suspects']} planted); top-N not planted: {q.get('top_n_misses')}")
        for row in q["cutoffs"]:
            print(f"{name:>9} > {row['min_score']:.2f}: {row['suspects']} suspects, {row['precision']:.3f} of them planted, {row['recall']:.3f} of the planted found")
    print(f"audit-corrected labels: {summary['corrected_labels']}")
    noisy_f1 = training["noisy labels (default recipe)"]["mean"]["samples_f1"]
    for name, t in training.items():
        recovered = f", recovers {(t['mean']['samples_f1'] - noisy_f1) / (clean_f1 - noisy_f1):.0%} of the loss" if clean_f1 and clean_f1 > noisy_f1 and name != "noisy labels (default recipe)" else ""
        print(f"{name}: samples-F1 on the original labels {t['mean']['samples_f1']:.4f} ± {t['std']['samples_f1']:.4f} (clean labels: {clean_f1}){recovered}")
    if args.json:
        atomic_write_json(args.json, summary)


if __name__ == "__main__":
    main()

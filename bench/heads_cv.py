"""Heads and bags compared on the same K folds: every metric (mean ± std), errors by kind, time, cache size.

Give finished ``scenetag train --cv K`` folders of the same data, K and seed (so the
same folds), e.g. the default recipe and the same recipe with another ``model.head``
or a ``model.bag``. For each: the K-fold test metrics (from its folds' results), the
missed / extra images per label summed over the test folds (from each fold's
test_predictions.csv), the mean seconds a fold trained (caching included in the first),
and the size of the shared activation cache at the head's tap (pooled vector or map).

    python bench/heads_cv.py runs/cv5 runs/cv5_csra runs/cv5_query [--json docs/figures/heads_cv5.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from scenetag.config import load_config
from scenetag.data.layouts import load_dataset
from scenetag.data.splits import Split
from scenetag.io import atomic_write_json
from scenetag.runs import RunDir
from scenetag.train.cv import summarise_folds

SHOWN = ("samples_f1", "micro_f1", "macro_f1", "hamming_loss", "subset_accuracy", "mAP", "bce_loss")


def head_tap_megabytes(cache_dir: Path) -> dict[str, float]:
    """MB of every cache in the folder at its last (the head's) tap, by number of views cached."""
    sizes = {}
    for meta_file in sorted(cache_dir.glob("*.json")):
        meta = json.loads(meta_file.read_text())
        if "taps" not in meta:
            continue  # not an activation cache (e.g. teacher targets)
        last = max(meta["taps"], key=int)
        info = meta["taps"][last]
        sizes[f"{info['shape'][1]} views, shape {info['shape'][2:]}"] = round(info["bytes"] / 2**20, 1)
    return sizes


def describe(cv: RunDir) -> dict:
    """One row: what the folders' recipe differs in, its K-fold figures, errors by kind, time and cache size."""
    k = json.loads(cv.cv_summary.read_text())["k"]
    folds = [cv.fold(i) for i in range(k)]
    results = [json.loads(f.result.read_text()) | {"run_dir": str(f.path)} for f in folds]
    cfg = load_config(folds[0].config)
    classes = list(load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format).classes)
    summary = summarise_folds(k, results, classes)
    return {
        "folder": str(cv.path),
        "command": train_command(cv, cfg, k),
        "head": cfg.model.head,
        "head_options": cfg.model.head_options(),
        "bag": cfg.model.bag,
        "bag_pool": cfg.model.bag_pool if cfg.model.bag else "",
        "mean": summary["mean"],
        "std": summary["std"],
        "errors_by_kind": summary["errors_by_kind"],
        "fold_seconds": summary["seconds"],
        "head_tap_cache_mb": head_tap_megabytes(cv.cache),
        "test_parts": [Split.read(f.split).as_dict()["test"] for f in folds],
    }


def train_command(cv: RunDir, cfg, k: int) -> str:
    """The command that trained the folder (for the recipes this compares: head and bag settings)."""
    sets = [f"--set model.head={cfg.model.head}"] if cfg.model.head != "reference" else []
    sets += [f"--set model.{key}={value:g}" for key, value in cfg.model.head_options().items()]
    if cfg.model.bag:
        sets += [f'--set "model.bag=[{", ".join(cfg.model.bag)}]"', f"--set model.bag_pool={cfg.model.bag_pool}"]
    return " ".join([f"scenetag train --cv {k} --out {cv.path}", *sets])


def name(row: dict) -> str:
    options = ", ".join(f"{k.split('_', 1)[1]} {v:g}" for k, v in row["head_options"].items())
    text = f"`{row['head']}`" + (f" ({options})" if options else "")
    return text + (f", bag of {len(row['bag'])} views, `{row['bag_pool']}` pooling" if row["bag"] else "")


def markdown(rows: list[dict]) -> str:
    classes = list(rows[0]["errors_by_kind"])
    head = "| recipe | " + " | ".join(SHOWN) + " | missed " + " / ".join(classes) + " | extra " + " / ".join(classes) + " | s per fold |"
    lines = [head, "|" + "---|" * (len(SHOWN) + 4)]
    for r in rows:
        cells = [f"{r['mean'][k]:.4f} ± {r['std'][k]:.4f}" for k in SHOWN]
        missed = " / ".join(str(r["errors_by_kind"][c]["missed"]) for c in classes)
        extra = " / ".join(str(r["errors_by_kind"][c]["extra"]) for c in classes)
        seconds = sum(r["fold_seconds"]) / len(r["fold_seconds"])
        lines.append(f"| {name(r)} | " + " | ".join(cells) + f" | {missed} | {extra} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv", nargs="+", help="finished `scenetag train --cv K` folders (same data, K and seed)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = [describe(RunDir(p)) for p in args.cv]
    if any(r["test_parts"] != rows[0]["test_parts"] for r in rows):
        raise SystemExit("the folders were not cut into the same folds (data, K or seed differ)")
    print(markdown(rows))
    for r in rows:
        print(f"{r['folder']}: head-tap cache {r['head_tap_cache_mb']}")
    if args.json:
        atomic_write_json(args.json, {"command": "python bench/heads_cv.py " + " ".join(args.cv), "rows": [{k: v for k, v in r.items() if k != "test_parts"} for r in rows]})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

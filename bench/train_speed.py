"""Seconds per epoch of each recipe phase with and without activation caching (not a test).

Both runs train the same schedule (``--epochs`` per phase, fixed LRs, no LR
finder) on the same images and views; "uncached" recomputes the frozen part of
the network for every batch (decode, draw the view, frozen forward without grad, then the
trainable part: what a plain PyTorch or fastai loop does), with the same boundaries, views
and trainable parameters (train.cache=false). The first epoch of a phase
pays one-off warm-up (allocator, oneDNN kernels), so the figures are the mean
of the later epochs (steady state); the first epoch is printed too. Usage:

    .venv/bin/python bench/train_speed.py [--data ../shared/data/miml-scene] [--limit 400] [--epochs 2]
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
import time
from pathlib import Path

from scenetag.config import load_config
from scenetag.runs import RunDir
from scenetag.train.recipe import train


def run(data: str, out: Path, cache: bool, limit: int, views: str, epochs: int) -> tuple[dict[str, list[float]], float]:
    cfg = load_config(
        None,
        [
            f"data.path={data}",
            f"train.cache={'true' if cache else 'false'}",
            f"train.views={views}",
            "train.lr_find=false",
            f"train.phases=[{{name: head, unfreeze: 0.0, epochs: {epochs}, lr: 0.003, lr_mult: 1.0}}, {{name: unfreeze60, unfreeze: 0.6, epochs: {epochs}, lr: 0.001, lr_mult: 10.0}}, {{name: unfreeze80, unfreeze: 0.8, epochs: {epochs}, lr: 0.0005, lr_mult: 10.0}}]",
        ],
    )
    if limit:
        from scenetag.data import load_dataset

        ds = load_dataset(data)
        keep = sorted(__import__("numpy").random.default_rng(0).permutation(len(ds))[:limit])
        from scenetag.io import atomic_write_text

        sub = out.parent / f"subset{limit}.csv"
        lines = ["image," + ",".join(ds.classes)] + [f"{ds.paths[i]}," + ",".join(str(int(v)) for v in ds.labels[i]) for i in keep]
        atomic_write_text(sub, "\n".join(lines) + "\n")
        cfg.data.path = str(sub)
    t0 = time.time()
    train(cfg, out, progress=False)
    total = time.time() - t0
    rows = list(csv.DictReader(open(RunDir(out).metrics_csv)))
    per_phase: dict[str, list[float]] = {}
    for r in rows:
        per_phase.setdefault(r["phase"], []).append(float(r["seconds"]))
    return per_phase, total


def steady(seconds: list[float]) -> float:
    """Mean epoch time after the first (warm-up) epoch, or the only epoch."""
    return sum(seconds[1:]) / len(seconds[1:]) if len(seconds) > 1 else seconds[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("--limit", type=int, default=400, help="images to use (0 = all); the uncached run is slow")
    ap.add_argument("--views", default="[orig, flip, crop, crop_flip]")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per phase (the first is warm-up)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (docs/figures/train_speed.json feeds the README)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cached, t_cached = run(args.data, Path(tmp) / "cached", True, args.limit, args.views, args.epochs)
        uncached, t_uncached = run(args.data, Path(tmp) / "uncached", False, args.limit, args.views, args.epochs)
    print(f"images: {args.limit or 'all'}, views: {args.views}, epochs per phase: {args.epochs}")
    print(f"{'phase':<12}{'cached s/epoch':>16}{'uncached s/epoch':>18}{'speed-up':>10}   first epoch: cached / uncached")
    for ph in cached:
        c, u = steady(cached[ph]), steady(uncached[ph])
        print(f"{ph:<12}{c:>16.1f}{u:>18.1f}{u / max(c, 1e-9):>9.1f}x   {cached[ph][0]:.1f} / {uncached[ph][0]:.1f}")
    print(f"whole run incl. caching pass and evaluation: cached {t_cached:.0f}s, uncached {t_uncached:.0f}s")
    if args.json:
        from scenetag.io import atomic_write_json

        phases = {ph: {"cached_s_per_epoch": round(steady(cached[ph]), 2), "uncached_s_per_epoch": round(steady(uncached[ph]), 2), "speedup": round(steady(uncached[ph]) / max(steady(cached[ph]), 1e-9), 1)} for ph in cached}
        atomic_write_json(args.json, {"images": args.limit or "all", "views": args.views, "epochs_per_phase": args.epochs, "phases": phases, "whole_run_s": {"cached": round(t_cached), "uncached": round(t_uncached)}, "command": "python bench/train_speed.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()

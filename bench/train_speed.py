"""Seconds per epoch of each recipe phase with and without activation caching (not a test).

Both runs train the same schedule (one epoch per phase, fixed LRs, no LR finder)
on the same images and views; "uncached" recomputes the frozen part of the
network for every batch, as the reference does. Usage:

    .venv/bin/python bench/train_speed.py [--data ../shared/data/miml-scene] [--limit 400]
"""
from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

from scenetag.config import load_config
from scenetag.training import train


def run(data: str, out: Path, cache: bool, limit: int, views: str) -> tuple[dict[str, float], float]:
    cfg = load_config(
        None,
        [
            f"data.path={data}",
            f"train.cache={'true' if cache else 'false'}",
            f"train.views={views}",
            "train.phases=[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.003, lr_mult: 1.0}, {name: unfreeze60, unfreeze: 0.6, epochs: 1, lr: 0.001, lr_mult: 10.0}, {name: unfreeze80, unfreeze: 0.8, epochs: 1, lr: 0.0005, lr_mult: 10.0}]",
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
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    return {r["phase"]: float(r["seconds"]) for r in rows}, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("--limit", type=int, default=400, help="images to use (0 = all); the uncached run is slow")
    ap.add_argument("--views", default="[orig, flip, crop, crop_flip]")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cached, t_cached = run(args.data, Path(tmp) / "cached", True, args.limit, args.views)
        uncached, t_uncached = run(args.data, Path(tmp) / "uncached", False, args.limit, args.views)
    print(f"images: {args.limit or 'all'}, views: {args.views}")
    print(f"{'phase':<12}{'cached s/epoch':>16}{'uncached s/epoch':>18}{'speed-up':>10}")
    for ph in cached:
        print(f"{ph:<12}{cached[ph]:>16.1f}{uncached[ph]:>18.1f}{uncached[ph] / max(cached[ph], 1e-9):>9.1f}x")
    print(f"whole run incl. caching pass and evaluation: cached {t_cached:.0f}s, uncached {t_uncached:.0f}s")


if __name__ == "__main__":
    main()

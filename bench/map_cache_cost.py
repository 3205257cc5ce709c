"""What caching the feature map (spatial heads) costs against the pooled vector: time and bytes.

The same images and views, the same frozen Lite0 and the same taps as the default recipe,
cached once for a pooled head (``reference``) and once for a spatial head (``csra``: the
last tap holds the 1280 x 7 x 7 map), each into an empty folder (written to disk, as runs do).

    python bench/map_cache_cost.py [--data ../shared/data/miml-scene] [-n 400] [--json docs/figures/map_cache_cost.json]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("-n", type=int, default=400, help="images (each with the default 6 training views)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from scenetag.config import load_config
    from scenetag.data.layouts import load_dataset
    from scenetag.io import atomic_write_json
    from scenetag.models.net import build_model, model_preprocessing
    from scenetag.train.cache import build_cache
    from scenetag.train.setup import model_identity, phase_boundaries, set_threads

    set_threads(0)
    ds = load_dataset(args.data).subset(range(args.n))
    rows = []
    for head in ("reference", "csra"):
        cfg = load_config(None, [f"model.head={head}", f"data.path={args.data}"])
        model = build_model(cfg.model.backbone, cfg.model.weights, len(ds.classes), head).eval()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            cache = build_cache(model, model_identity(cfg), ds, cfg.train.views, phase_boundaries(model, cfg), model_preprocessing(model), cfg.train.seed, Path(tmp), progress=False)
            seconds = time.perf_counter() - t0
            last = max(cache.acts)
            nbytes = {tap: int(arr.nbytes) for tap, arr in cache.acts.items()}
        views = args.n * len(cfg.train.views)
        rows.append({"head": head, "views": views, "seconds": round(seconds, 1), "views_per_s": round(views / seconds, 1),
                     "head_tap_shape": list(cache.acts[last].shape[2:]), "head_tap_mb": round(nbytes[last] / 2**20, 1), "all_taps_mb": round(sum(nbytes.values()) / 2**20, 1)})  # fmt: skip
        print(f"{head:>9}: {views} views cached in {seconds:.1f} s ({views / seconds:.1f} views/s); head tap {rows[-1]['head_tap_shape']} {rows[-1]['head_tap_mb']} MB, all taps {rows[-1]['all_taps_mb']} MB", flush=True)
    if args.json:
        atomic_write_json(args.json, {"command": "python bench/map_cache_cost.py " + " ".join(sys.argv[1:]), "threads": torch.get_num_threads(), "rows": rows})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

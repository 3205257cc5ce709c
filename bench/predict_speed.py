"""Inference throughput on this machine (not a test). Usage:

    .venv/bin/python bench/predict_speed.py --model runs/default/best.pt [--data ../shared/data/miml-scene] [-n 320]

A bag model (model.bag) is timed per image: each image is its whole bag of views.

Prints, on the same images: model-only ONNX Runtime throughput on pre-decoded
tensors (batch 32), and end-to-end prediction on the JPEG files (decode +
resize + model + thresholds) for the PyTorch and the ONNX paths, without and
with flip TTA.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="runs/default/best.pt")
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("-n", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (docs/figures/predict_speed.json feeds the README)")
    args = ap.parse_args()

    from scenetag.data.images import open_image
    from scenetag.infer.export import export_onnx
    from scenetag.infer.onnx import INPUT, load_onnx
    from scenetag.infer.predictor import Predictor, expand_paths
    from scenetag.data.preprocessing import Preprocessing
    from scenetag.data.eval_views import eval_array

    torch.set_num_threads(2)
    paths = expand_paths([Path(args.data) / "original"])[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "m.onnx"
        export_onnx(args.model, onnx_path)
        sess, meta = load_onnx(onnx_path)
        pp = Preprocessing.from_dict(meta["preprocessing"])
        x = np.stack([eval_array(open_image(p), pp, meta.get("bag") or ()) for p in paths])  # a bag model: (images, views, 3, s, s)
        bs = args.batch_size
        sess.run(None, {INPUT: x[:bs]})  # warm-up
        t = time.perf_counter()
        for s in range(0, len(x), bs):
            sess.run(None, {INPUT: x[s : s + bs]})
        model_only = len(x) / (time.perf_counter() - t)
        print(f"images: {len(paths)} JPEGs from {args.data}, batch {bs}, {torch.get_num_threads()} threads")
        print(f"model only, ONNX Runtime, pre-decoded tensors:       {model_only:7.1f} img/s")
        rows = []
        for label, path in (("PyTorch (channels_last)", args.model), ("ONNX Runtime", onnx_path)):
            for tta in (False, True):
                pred = Predictor(path, batch_size=bs, tta=tta)
                pred.predict(paths[:bs])  # warm-up
                t = time.perf_counter()
                res = pred.predict(paths)
                rate = len(paths) / (time.perf_counter() - t)
                assert not any(r.error for r in res)
                rows.append((label, tta, rate))
                print(f"end to end, {label:<24} TTA {'on ' if tta else 'off'}:  {rate:7.1f} img/s")
        onnx_e2e = [r for r in rows if r[0] == "ONNX Runtime" and not r[1]][0][2]
        print(f"end-to-end ONNX / model-only ONNX = {onnx_e2e / model_only:.2f} (target >= 0.8)")
    if args.json:
        from scenetag.io import atomic_write_json

        atomic_write_json(args.json, {
            "model": str(args.model), "images": len(paths), "batch": bs, "threads": torch.get_num_threads(), "model_only_onnx": round(model_only, 1),
            "end_to_end": [{"engine": label, "tta": tta, "img_per_s": round(rate, 1)} for label, tta, rate in rows],
            "command": "python bench/predict_speed.py " + " ".join(sys.argv[1:]),
        })  # fmt: skip


if __name__ == "__main__":
    main()

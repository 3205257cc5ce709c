"""Command line: parses arguments and calls library functions, nothing more."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .version import __version__
from .config import PRESETS
from .data.layouts import DEFAULT_DATA, FORMATS
from .errors import ScenetagError, UsageError


def _add_data_args(p: argparse.ArgumentParser, default: str | None = str(DEFAULT_DATA)) -> None:
    p.add_argument("--data", default=default, help="data folder or labels file (default: %(default)s)")
    p.add_argument("--labels", default=None, help="labels file (labels.json, .csv or .mat) for a folder of images")
    p.add_argument("--format", default="auto", choices=FORMATS, help="data layout (default: auto-detect)")


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import make_synthetic

    out = make_synthetic(Path(args.dir), n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic scenes to {out}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from .data.images import check_images
    from .data.layouts import load_dataset
    from .workflows.explore import explore

    ds = load_dataset(args.data, args.labels, args.format)
    if args.check:
        errors = check_images(ds.paths)
        if errors:
            print(f"{len(errors)} bad image file(s):", file=sys.stderr)
            for e in errors:
                print(f"  {e}", file=sys.stderr)
            return 2
        print(f"all {len(ds)} images decode")
    summary = explore(ds, Path(args.out), samples_per_class=args.samples, seed=args.seed)
    for line in summary["text"]:
        print(line)
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _train_overrides(args: argparse.Namespace) -> list[str]:
    """Flags are shorthands for ``--set section.key=value`` overrides."""
    ov = []
    for flag, key in [("data", "data.path"), ("labels", "data.labels"), ("format", "data.format"), ("backbone", "model.backbone"), ("weights", "model.weights"), ("seed", "train.seed"), ("loss", "train.loss"), ("engine", "train.engine"), ("device", "train.device"), ("amp", "train.amp")]:
        v = getattr(args, flag, None)
        if v is not None:
            ov.append(f"{key}={v}")
    if getattr(args, "no_cache", False):
        ov.append("train.cache=false")
    return ov + list(args.set or [])


def _load_cfg(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, _train_overrides(args), args.preset)


def _print_metrics(metrics: dict, title: str) -> None:
    from .metrics import METRIC_KEYS

    print(f"{title} ({metrics.get('n_images', '?')} images):")
    print("  " + "  ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_KEYS if k in metrics))
    per = metrics.get("per_label", {})
    if per:
        print(f"  {'label':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'AP':>10}{'support':>9}{'thresh':>8}")
        for c, r in per.items():
            print(f"  {c:<12}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}{r['ap']:>10.4f}{r['support']:>9d}{r['threshold']:>8.3f}")


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import RunDir
    from .train.cv import cross_validate
    from .train.recipe import train

    if args.ensemble and not args.cv:
        raise UsageError("--ensemble averages the fold models of --cv K; to combine other checkpoints use `scenetag ensemble`")
    if args.cv:
        if args.resume:
            raise UsageError("--cv and --resume cannot be combined (rerunning --cv reuses finished folds)")
        cv = cross_validate(_load_cfg(args), Path(args.out), args.cv, progress=not args.quiet)
        print(f"{args.cv}-fold cross-validation (test part of each fold, mean ± std):")
        for key, mean in cv["mean"].items():
            print(f"  {key:<18} {mean:.4f} ± {cv['std'][key]:.4f}")
        out = RunDir(args.out)
        print(f"per fold: {out.cv_summary}")
        if args.ensemble:
            from .workflows.ensemble import make_ensemble

            folds = [out.fold(i).best for i in range(args.cv)]
            res = make_ensemble(folds, out.ensemble, progress=not args.quiet)
            print(f"ensemble of the {args.cv} fold models: {res['path']} ({res['threshold_source']})")
        return 0
    cfg = None if args.resume else _load_cfg(args)
    out = Path(args.resume or args.out)
    result = train(cfg, out, resume=bool(args.resume), progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) > 0:
        return 0  # under torchrun rank 0 reports
    _print_result(result)
    print(f"trained in {result['train_seconds']:.0f}s; run folder: {out} (best.pt, metrics.csv, curves.png)")
    return 0


def _print_result(result: dict) -> None:
    for part in ("val", "test"):
        if part in result["metrics"]:
            _print_metrics(result["metrics"][part], f"{part} metrics (tuned per-label thresholds)")


def cmd_run(args: argparse.Namespace) -> int:
    """Main job of `make run`: exploration report, train (or reuse/resume), evaluation report of the test split."""
    from .data.layouts import load_dataset
    from .runs import RunDir
    from .train.recipe import train_or_resume
    from .workflows.evaluate import evaluate_checkpoint
    from .workflows.explore import explore

    run = RunDir(args.out)
    out = run.path
    cfg = _load_cfg(args)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    summary = explore(ds, run.explore)
    print("\n".join(summary["text"]))
    print(f"exploration report: {run.explore / 'report.html'}")
    result = train_or_resume(cfg, out, progress=not args.quiet)
    if result.get("reused"):
        print(f"{out} already holds a finished run with this config (remove it to retrain); its results:")
    else:
        print(f"trained in {result['train_seconds']:.0f}s")
    if "test" in result["metrics"]:
        m = evaluate_checkpoint(run.best, run.evaluation, data=out, split="test", progress=not args.quiet)
        _print_metrics(m, "test split, evaluated from the images (tuned per-label thresholds)")
        print(f"evaluation report: {run.evaluation / 'report.html'}")
    else:
        _print_result(result)
    print(f"run folder: {out} (best.pt, metrics.csv, curves.png)")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .train.recipe import lr_find_only

    res = lr_find_only(_load_cfg(args), Path(args.out), args.phase, progress=not args.quiet)
    print(f"suggested LR {res['lr']:.2e}; plot: {res['plot']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .workflows.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(args.model, Path(args.out), data=args.data, labels=args.labels, fmt=args.format, split=args.split, fallback=not args.no_fallback, progress=not args.quiet)
    _print_metrics(m, "evaluation")
    print(f"report: {Path(args.out) / 'report.html'}; metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .infer.outputs import write_predictions
    from .infer.predictor import Predictor, expand_paths, shard

    predictor = Predictor(args.model, batch_size=args.batch_size, fallback=not args.no_fallback)
    paths = expand_paths(args.paths)
    if args.shard:
        paths = shard(paths, args.shard)
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.paths)}")
    results = predictor.predict(paths, progress=not args.quiet)
    if args.output:
        write_predictions(results, predictor.classes, Path(args.output), args.format)
        print(f"wrote {len(results)} predictions to {args.output}")
    else:
        width = max(len(r.path) for r in results)
        print(f"{'image':<{width}}  {'labels':<20}" + "".join(f"  {c[:9]:>9}" for c in predictor.classes))
        for r in results:
            if r.error:
                print(f"{r.path:<{width}}  SKIPPED: {r.error}")
            else:
                print(f"{r.path:<{width}}  {' '.join(r.labels):<20}" + "".join(f"  {r.probabilities[c]:>9.3f}" for c in predictor.classes))
    skipped = sum(1 for r in results if r.error)
    if skipped:
        print(f"{skipped} of {len(results)} file(s) skipped (unreadable or not images)", file=sys.stderr)
        return 3
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .workflows.ensemble import make_ensemble

    res = make_ensemble(args.models, Path(args.out), weights=args.weights, tune_on=args.tune_on, progress=not args.quiet)
    print(f"thresholds ({res['threshold_source']}): " + " ".join(f"{t:.3f}" for t in res["thresholds"]))
    for part, m in res["metrics"].items():
        _print_metrics(m, f"ensemble on {args.tune_on}'s {part} part")
    print(f"wrote {res['path']} (use it with predict, evaluate, export, serve)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export_onnx, export_torchscript

    fn = export_onnx if args.format == "onnx" else export_torchscript
    out = args.out or str(Path(args.model).with_suffix(".onnx" if args.format == "onnx" else ".ts"))
    res = fn(args.model, out)
    print(f"exported {res['path']} (+ {res['sidecar']}); max abs difference vs PyTorch on a sample batch: {res['max_abs_diff']:.2e}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .workflows.serve import ServeLimits, serve

    print(f"serving {args.model} on http://{args.host}:{args.port}/ (docs at /docs); Ctrl-C stops")
    serve(args.model, args.host, args.port, ServeLimits(args.max_upload_mb, args.max_files, body_timeout_s=args.body_timeout))
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p, default=None)
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--preset", default="default", choices=list(PRESETS), help="named recipe under the config file and flags (best: slower, see README)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. train.phases.0.epochs=10")
    p.add_argument("--backbone", default=None, help="lite0 (default), lite1, lite2, resnet50 or any timm name")
    p.add_argument("--weights", default=None, help="default | none (random init) | FILE")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--loss", default=None, choices=["bce", "asl"])
    p.add_argument("--engine", default=None, choices=["auto", "onnx", "torch"], help="engine for frozen forward passes")
    p.add_argument("--device", default=None, help="auto (default: CUDA, else MPS, else CPU), cpu, cuda[:N], mps")
    p.add_argument("--amp", default=None, choices=["bf16", "fp16"], help="mixed precision on GPU")
    p.add_argument("--no-cache", action="store_true", help="recompute the frozen backbone every batch (slow; for benchmarks)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenetag", description="Multi-label natural scene tagging.")
    parser.add_argument("--version", action="version", version=f"scenetag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="draw a small synthetic multi-label scene set (MIML layout)")
    p.add_argument("dir")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("explore", help="label statistics and pictures of a data set -> report.html")
    _add_data_args(p)
    p.add_argument("--out", default="runs/explore")
    p.add_argument("--check", action="store_true", help="decode every image first and report all bad files")
    p.add_argument("--samples", type=int, default=4, help="sample images per class in the grid")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("train", help="train the recipe (head, then progressive unfreezing) into a run folder")
    _add_train_args(p)
    p.add_argument("--out", default="runs/train", help="run folder")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run from its last.pt")
    p.add_argument("--cv", type=int, default=0, metavar="K", help="stratified K-fold cross-validation: every metric as mean ± std over folds")
    p.add_argument("--ensemble", action="store_true", help="with --cv: also write OUT/ensemble.pt averaging the K fold models")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="the main job: train the default recipe (or reuse/resume the run in --out) and report")
    _add_train_args(p)
    p.add_argument("--out", default="runs/default", help="run folder")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="metrics, per-label table, pictures and report.html for a model on data")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or exported .onnx")
    _add_data_args(p, default=None)
    p.add_argument("--split", choices=["test", "val"], default=None, help="evaluate a run's held-out split (--data RUN_DIR, default: the model's folder)")
    p.add_argument("--out", default="runs/evaluate")
    p.add_argument("--no-fallback", action="store_true", help="do not give label-less images their most probable label")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="tag new images (files, folders, globs)")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or exported .onnx")
    p.add_argument("paths", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--format", choices=["csv", "json"], default="csv", help="format of --output")
    p.add_argument("--output", default=None, help="write predictions to this file instead of a table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard", default=None, metavar="I/N", help="only the I-th of N interleaved shards of the inputs")
    p.add_argument("--no-fallback", action="store_true", help="do not give label-less images their most probable label")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ensemble", help="average several checkpoints into one ensemble checkpoint")
    p.add_argument("models", nargs="+", help="two or more .pt checkpoints with the same classes")
    p.add_argument("--out", required=True, help="ensemble checkpoint to write")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per model (default: equal)")
    p.add_argument("--tune-on", default=None, metavar="RUN_DIR", help="tune thresholds on this run's val part and report its test part (default: mean of the members' thresholds)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (verified with ONNX Runtime) or TorchScript")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", default=None, help="output file (default: beside the checkpoint)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="web service + page for a checkpoint or .onnx model")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0)
    p.add_argument("--max-files", type=int, default=16)
    p.add_argument("--body-timeout", type=float, default=10.0, help="seconds to wait for the next piece of an upload before dropping it")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("lr-find", help="LR finder for one phase: plot + suggested LR")
    _add_train_args(p)
    p.add_argument("--out", default="runs/lr-find")
    p.add_argument("--phase", type=int, default=1, help="which phase of the recipe (1 = head only)")
    p.set_defaults(func=cmd_lr_find)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0 and not os.environ.get("SCENETAG_LOG_ALL_RANKS"):
        level = logging.WARNING  # under torchrun only rank 0 talks
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ScenetagError as e:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, ...: name the file, no traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None) or getattr(args, "resume", None)
        hint = f"; continue with: scenetag train --resume {out}" if args.command in ("train", "run") and out else ""
        print(f"interrupted (the last finished epoch is saved in last.pt){hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line: parses arguments, calls library functions and prints their results, nothing more.

Heavy libraries (torch, timm, scikit-learn) are imported inside the commands
that need them, so ``scenetag --help`` answers at once. Every failure a user can
cause is a :class:`~scenetag.errors.ScenetagError`: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .presets import PRESETS
from .data.images import DEFAULT_MAX_PIXELS
from .data.label_issues import DEFAULT_CUTOFFS, RANKINGS
from .data.layouts import DEFAULT_DATA, FORMATS
from .errors import ScenetagError, UsageError, missing_extra
from .metrics import METRIC_KEYS
from .workflows.auth import TOKEN_ENV, token_from
from .runs import REPORT_PAGE
from .workflows.limits import ServeLimits
from .version import __version__

EXIT_OK, EXIT_ERROR, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 2, 3, 130


# --------------------------------------------------------------------------- argument types


def _bounded(kind: type, low: float | None = None, high: float | None = None):
    """An argparse type: ``kind`` within [low, high]; anything else is a usage error (exit 2)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}], got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


class _Deprecated(argparse.Action):
    """An old option spelling that still works for one release, with a warning naming the new one."""

    def __init__(self, *args, new: str, **kwargs):
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated here; use {self.new} (the old spelling goes in the next release)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _common(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    # SUPPRESS: -v after the command works, and does not reset a -v given before it.
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging, and tracebacks for errors")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_data_args(p: argparse.ArgumentParser, default: str | None = str(DEFAULT_DATA)) -> None:
    shown = f"default: {default}" if default else f"default: data.path of the config, {DEFAULT_DATA}"
    p.add_argument("--data", default=default, help=f"data folder or labels file ({shown})")
    p.add_argument("--labels", default=None, help="labels file (labels.json, .csv or .mat) for a folder of images (default: found in the folder)")
    p.add_argument("--layout", dest="layout", default=None if default is None else "auto", choices=FORMATS, help="data layout (default: auto-detect)")
    p.add_argument("--format", dest="layout", choices=FORMATS, action=_Deprecated, new="--layout", help=argparse.SUPPRESS)


def _add_max_pixels(p: argparse.ArgumentParser, default: int | None = DEFAULT_MAX_PIXELS) -> None:
    p.add_argument("--max-pixels", type=_bounded(int, 1), default=default, help=f"refuse images with more pixels than this (decompression bombs; default: {default or 'the run data.max_pixels'})")


# --------------------------------------------------------------------------- printing


def _print_metrics(metrics: dict, title: str) -> None:
    from .metrics import METRIC_KEYS

    print(f"{title} ({metrics.get('n_images', '?')} images):")
    print("  " + "  ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_KEYS if k in metrics))
    per = metrics.get("per_label", {})
    if per:
        print(f"  {'label':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'AP':>10}{'support':>9}{'thresh':>8}")
        for c, r in per.items():
            print(f"  {c:<12}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}{r['ap']:>10.4f}{r['support']:>9d}{r['threshold']:>8.3f}")


def _print_result(result: dict) -> None:
    for part in ("val", "test"):
        if part in result["metrics"]:
            _print_metrics(result["metrics"][part], f"{part} metrics (tuned per-label thresholds)")


def _print_predictions(results: list, classes: list[str]) -> None:
    width = max(len(r.path) for r in results)
    print(f"{'image':<{width}}  {'labels':<20}" + "".join(f"  {c[:9]:>9}" for c in classes))
    for r in results:
        if r.error:
            print(f"{r.path:<{width}}  SKIPPED: {r.error}")
        else:
            print(f"{r.path:<{width}}  {' '.join(r.labels):<20}" + "".join(f"  {r.probabilities[c]:>9.3f}" for c in classes))


# --------------------------------------------------------------------------- commands


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import make_synthetic

    out = make_synthetic(Path(args.dir), n=args.n, seed=args.seed, force=args.force)
    print(f"wrote {args.n} synthetic scenes to {out}")
    return EXIT_OK


def cmd_explore(args: argparse.Namespace) -> int:
    from .data.images import check_images
    from .data.layouts import load_dataset
    from .workflows.explore import explore

    ds = load_dataset(args.data, args.labels, args.layout)
    if args.check:
        errors = check_images(ds.paths, args.max_pixels)
        if errors:
            print(f"{len(errors)} bad image file(s):", file=sys.stderr)
            for e in errors:
                print(f"  {e}", file=sys.stderr)
            return EXIT_ERROR
        print(f"all {len(ds)} images decode")
    summary = explore(ds, Path(args.out), samples_per_class=args.samples, seed=args.seed, max_pixels=args.max_pixels)
    print("\n".join(summary["text"]))
    print(f"report: {Path(args.out) / REPORT_PAGE}")
    return EXIT_OK


def _train_overrides(args: argparse.Namespace) -> list[str]:
    """Flags are shorthands for ``--set section.key=value`` overrides."""
    flags = [("data", "data.path"), ("labels", "data.labels"), ("layout", "data.format"), ("backbone", "model.backbone"), ("weights", "model.weights"),
             ("seed", "train.seed"), ("loss", "train.loss"), ("engine", "train.engine"), ("device", "train.device"), ("amp", "train.amp")]  # fmt: skip
    ov = [f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag, None) is not None]
    if getattr(args, "no_cache", False):
        ov.append("train.cache=false")
    return ov + list(args.set or [])


def _load_cfg(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, _train_overrides(args), args.preset)


def _refuse_changes_on_resume(args: argparse.Namespace) -> None:
    """``--resume`` continues a run with its own config: options that would change it are an error."""
    from .config import changed_keys
    from .runs import RunDir

    run = RunDir(args.resume)
    if not run.config.is_file():
        return  # train() says there is nothing to resume
    changed = changed_keys(run.config, args.config, _train_overrides(args), args.preset)
    if changed:
        raise UsageError(f"--resume {run} continues the run with its own config ({run.config}); these options would change {', '.join(changed)}: drop them, or train a new run with another --out")


def _cross_validate(args: argparse.Namespace) -> int:
    from .runs import RunDir
    from .train.cv import cross_validate

    if args.resume:
        raise UsageError("--cv and --resume cannot be combined (rerunning --cv reuses finished folds)")
    out = RunDir(args.out)
    cv = cross_validate(_load_cfg(args), out.path, args.cv, progress=not args.quiet)
    print(f"{args.cv}-fold cross-validation (test part of each fold, mean ± std):")
    for key, mean in cv["mean"].items():
        print(f"  {key:<18} {mean:.4f} ± {cv['std'][key]:.4f}")
    print(f"per fold: {out.cv_summary}")
    if args.ensemble:
        from .workflows.ensemble import make_ensemble

        res = make_ensemble([out.fold(i).best for i in range(args.cv)], out.ensemble, progress=not args.quiet)
        print(f"ensemble of the {args.cv} fold models: {res['path']} ({res['threshold_source']})")
    if args.refit:
        from .train.refit import refit_after_cv

        _print_refit(refit_after_cv(out.path, args.cv, progress=not args.quiet), f"the {args.cv}-fold mean above")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import RunDir
    from .train.recipe import train
    from .train.refit import refit
    from .train.tracking import tracked

    if args.ensemble and not args.cv:
        raise UsageError("--ensemble averages the fold models of --cv K; to combine other checkpoints use `scenetag ensemble`")
    options = _tracking_options(args)
    if args.cv:
        return _cross_validate(args)
    if args.resume:
        _refuse_changes_on_resume(args)
    if args.refit:
        from .train.refit import one_process

        one_process()  # before hours of training, not after
    out = Path(args.resume or args.out)
    with tracked(options, out) as tracking:  # records the training, the refit and then the run's files (--log)
        result = train(None if args.resume else _load_cfg(args), out, resume=bool(args.resume), progress=not args.quiet, callbacks=tracking.callbacks)
        if int(os.environ.get("RANK", "0")) > 0:
            return EXIT_OK  # under torchrun rank 0 reports
        _print_result(result)
        print(f"trained in {result['train_seconds']:.0f}s; run folder: {out} (best.pt, metrics.csv, curves.png); its page: {RunDir(out).dashboard}")
        if args.refit:
            _print_refit(refit(out, progress=not args.quiet))
    return EXIT_OK


def _tracking_options(args: argparse.Namespace):
    """``--log`` / ``--log-dir`` / ``--log-uri`` as tracking options (checked to fit together)."""
    from .train.tracking import TrackingOptions

    backends = tuple(dict.fromkeys(getattr(args, "log", None) or ()))
    if backends and args.cv:
        raise UsageError("--log records one run; it cannot be combined with --cv (track a refit or single runs instead)")
    if getattr(args, "log_dir", None) and "tensorboard" not in backends:
        raise UsageError("--log-dir is where --log tensorboard writes; add --log tensorboard")
    if getattr(args, "log_uri", None) and "mlflow" not in backends:
        raise UsageError("--log-uri is where --log mlflow records; add --log mlflow")
    return TrackingOptions(backends, getattr(args, "log_dir", None), getattr(args, "log_uri", None))


def _print_refit(res: dict, estimate: str = "the held-out estimate of best.pt") -> None:
    took = "reused" if res["reused"] else f"{res['train_seconds']:.0f}s"
    print(f"refit on all {res['n_images']} labelled images ({took}): {res['final']} is the model to ship;")
    print(f"  its expected quality is {estimate} (a model cannot be scored on images it trained on)")


def cmd_distill(args: argparse.Namespace) -> int:
    """``train`` with ``train.teacher`` (and ``train.teacher_weight``) set from the flags."""
    args.set = list(args.set or []) + [f"train.teacher={args.teacher}"] + ([f"train.teacher_weight={args.teacher_weight}"] if args.teacher_weight is not None else [])
    return cmd_train(args)


def cmd_refit(args: argparse.Namespace) -> int:
    from .train.refit import refit

    _print_refit(refit(Path(args.run), progress=not args.quiet))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from .runs import AuditDir
    from .workflows.audit import audit

    out = audit(_load_cfg(args), args.out, k=args.cv, ranking=args.ranking, from_cv=args.from_cv, progress=not args.quiet, min_score=args.min_score, accept_above=args.accept_above)
    print(f"{out['suspects']} suspected label errors among {out['images']} images x {len(out['counts'])} labels ({out['ranking']} ranking, score > {out['min_score']:g}, out-of-fold probabilities of {out['cv']})")
    for label, kinds in out["counts"].items():
        print(f"  {label:<12} missing {kinds['missing']:>4}  extra {kinds['extra']:>4}")
    folder = AuditDir(out["folder"])
    print(f"suspects, most suspicious first: {folder.suspects}; gallery: {folder.report}")
    print(f"review them: scenetag review --audit {folder}; or train on the {out['suggested_changes']} surest changes (score > {out['accept_above']:g}) accepted unseen: scenetag train --labels {folder.suggested_labels}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Main job of `make run`: exploration report, train (or reuse/resume), evaluation report of the test split."""
    from .runs import REPORT_PAGE, RunDir
    from .workflows.run import main_job

    out = main_job(_load_cfg(args), Path(args.out), progress=not args.quiet, say=print, refit=not args.no_refit)
    result, evaluation = out["result"], out["evaluation"]
    if result.get("reused"):
        print(f"{args.out} already holds a finished run with this config (remove it to retrain); its results:")
    else:
        print(f"trained in {result['train_seconds']:.0f}s")
    if evaluation:
        _print_metrics(evaluation, "held-out estimate: best.pt on the test split, images it never saw (tuned per-label thresholds)")
        print(f"evaluation report: {RunDir(args.out).evaluation / REPORT_PAGE}")
    else:
        _print_result(result)
    if out["refit"]:
        _print_refit(out["refit"])
    shipped = "final.pt, best.pt" if out["refit"] else "best.pt"
    print(f"run folder: {args.out} ({shipped}, metrics.csv, curves.png, run.json); its page: {RunDir(args.out).dashboard}")
    if out["record"].get("label_suspects_in_test"):
        _print_audit_hint(out["record"]["label_suspects_in_test"], args.data or "DIR")
    return EXIT_OK


def _print_audit_hint(suspects: dict, data: str) -> None:
    """How many likely label errors the test part holds, and the commands that find and fix them on every image."""
    print(
        f"labels: {suspects['pairs']} (image, label) pair(s) of the {suspects['test_images']} test images are likely label errors (cleanlab, on {suspects['images']} image(s)). "
        f"Find them on every image: scenetag audit --data {data} --out runs/audit (or --from-cv a `train --cv 5` folder), "
        "then fix them: scenetag review --audit runs/audit"
    )


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .train.recipe import lr_find_only

    res = lr_find_only(_load_cfg(args), Path(args.out), args.phase, progress=not args.quiet)
    print(f"suggested LR {res['lr']:.2e}; plot: {res['plot']}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .workflows.compare import compare, text_lines, write_report

    result = compare(args.runs, sort=args.sort)
    print("\n".join(text_lines(result)))
    if args.out:
        print(f"report: {write_report(result, args.out)}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .workflows.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(_model_file(args.model, evaluated=bool(args.split)), Path(args.out), data=args.data, labels=args.labels, fmt=args.layout or "auto", split=args.split, fallback=not args.no_fallback, progress=not args.quiet, max_pixels=args.max_pixels)
    _print_metrics(m, "evaluation")
    print(f"report: {Path(args.out) / REPORT_PAGE}; metrics: {Path(args.out) / 'metrics.json'}")
    return EXIT_OK


def _model_file(given: str, evaluated: bool = False) -> Path:
    """``--model``: a file, or a run folder (its final.pt, else best.pt; with ``evaluated`` its best.pt), said on stderr."""
    from .runs import model_file

    path = model_file(given, evaluated)
    if path != Path(given):
        print(f"model: {path}", file=sys.stderr)
    return path


def cmd_predict(args: argparse.Namespace) -> int:
    from .infer.outputs import write_predictions
    from .infer.predictor import Predictor, expand_paths, shard

    predictor = Predictor(_model_file(args.model), batch_size=args.batch_size, fallback=not args.no_fallback, max_pixels=args.max_pixels)
    paths = expand_paths(args.paths)
    if args.shard:
        paths = shard(paths, args.shard)
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.paths)}")
    results = predictor.predict(paths, progress=not args.quiet)
    if args.output:
        write_predictions(results, predictor.classes, Path(args.output), args.output_format)
        print(f"wrote {len(results)} predictions to {args.output}")
    else:
        _print_predictions(results, predictor.classes)
    skipped = sum(1 for r in results if r.error)
    if skipped:
        print(f"{skipped} of {len(results)} file(s) skipped (unreadable or not images)", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .workflows.ensemble import make_ensemble

    res = make_ensemble([_model_file(m) for m in args.models], Path(args.out), weights=args.weights, tune_on=args.tune_on, progress=not args.quiet)
    print(f"thresholds ({res['threshold_source']}): " + " ".join(f"{t:.3f}" for t in res["thresholds"]))
    for part, m in res["metrics"].items():
        _print_metrics(m, f"ensemble on {args.tune_on}'s {part} part")
    print(f"wrote {res['path']} (use it with predict, evaluate, export, serve)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export_onnx, export_torchscript

    fn = export_onnx if args.to == "onnx" else export_torchscript
    model = _model_file(args.model)
    out = args.out or str(model.with_suffix(".onnx" if args.to == "onnx" else ".ts"))
    res = fn(model, out)
    print(f"exported {res['path']} (+ {res['sidecar']}); max abs difference vs PyTorch on a sample batch: {res['max_abs_diff']:.2e}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .workflows.serve import serve

    model = _model_file(args.model)

    def ready(url: str) -> None:  # called once the model is loaded and the port is bound
        print(f"serving {model} on {url} (docs at /docs); Ctrl-C stops", flush=True)

    limits = ServeLimits(args.max_upload_mb, args.max_files, max_request_pixels=int(args.max_request_mpx * 1e6), body_timeout_s=args.body_timeout, header_timeout_s=args.header_timeout,
                         max_connections=args.max_connections, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue)  # fmt: skip
    serve(model, args.host, args.port, limits, on_ready=ready, token=token_from(args.token), no_auth=args.no_auth)
    return EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    from .workflows.review import review_server

    def ready(url: str) -> None:
        print(f"reviewing {args.audit} on {url}{'?token=...' if token_from(args.token) else ''}; decisions are saved as you go; Ctrl-C stops", flush=True)

    review_server(args.audit, args.host, args.port, token_from(args.token), on_ready=ready)
    return EXIT_OK


# --------------------------------------------------------------------------- parsers


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_data_args(p, default=None)
    p.add_argument("--config", default=None, help="YAML config file (default: the built-in recipe)")
    p.add_argument("--preset", default="default", choices=list(PRESETS), help="named recipe under the config file and flags (default: %(default)s; best: Lite2 at 260 px, slower, see README)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. train.phases.0.epochs=10 (repeatable)")
    p.add_argument("--backbone", default=None, help="lite0 (default), lite1, lite2, resnet50 or any timm name")
    p.add_argument("--weights", default=None, help="default (offline ImageNet weights) | none (random init) | FILE")
    p.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1), default=None, help="seed of the split, views and training (default: 0)")
    p.add_argument("--loss", default=None, choices=["bce", "asl"], help="training loss (default: bce)")
    p.add_argument("--engine", default=None, choices=["auto", "onnx", "torch"], help="engine for frozen forward passes (default: auto)")
    p.add_argument("--device", default=None, help="auto (default: CUDA, else MPS, else CPU), cpu, cuda[:N], mps")
    p.add_argument("--amp", default=None, choices=["bf16", "fp16"], help="mixed precision on GPU (default: off)")
    p.add_argument("--no-cache", action="store_true", help="recompute the frozen backbone every batch (slow; for benchmarks)")
    _common(p)


def _add_data_commands(sub) -> None:
    p = sub.add_parser("synth", help="draw a small synthetic multi-label scene set (MIML layout)")
    p.add_argument("dir", help="folder to write (original/<n>.jpg + labels.json)")
    p.add_argument("-n", type=_bounded(int, 1, 100_000), default=200, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1), default=0, help="drawing seed (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="write into a folder that already holds files (its images and labels.json are replaced)")
    _common(p, quiet=False)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("explore", help="label statistics and pictures of a data set -> report.html")
    _add_data_args(p)
    p.add_argument("--out", default="runs/explore", help="output folder (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="decode every image first and report all bad files")
    p.add_argument("--samples", type=_bounded(int, 0, 40), default=4, help="sample images per class in the grid (default: %(default)s)")
    p.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1), default=0, help="seed choosing the sample images (default: %(default)s)")
    _add_max_pixels(p)
    _common(p, quiet=False)
    p.set_defaults(func=cmd_explore)


def _add_tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", action="append", choices=["tensorboard", "mlflow"], default=None, help="also record the run (params, per-epoch and final metrics, pictures, checkpoints) in TensorBoard or MLflow; repeat for both (extras scenetag[tensorboard], scenetag[mlflow])")
    p.add_argument("--log-dir", default=None, metavar="DIR", help="--log tensorboard: folder of the event files (default: OUT/tensorboard)")
    p.add_argument("--log-uri", default=None, metavar="URI", help="--log mlflow: tracking server or store URI (default: $MLFLOW_TRACKING_URI, else the local store OUT/mlflow/mlflow.db)")


def _add_training_commands(sub) -> None:
    p = sub.add_parser("train", help="train the recipe (head, then progressive unfreezing) into a run folder")
    _add_train_args(p)
    p.add_argument("--out", default="runs/train", help="run folder (default: %(default)s)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run from its last.pt, with its own config")
    p.add_argument("--cv", type=_bounded(int, 2, 100), default=0, metavar="K", help="stratified K-fold cross-validation: every metric as mean ± std over folds")
    p.add_argument("--ensemble", action="store_true", help="with --cv: also write OUT/ensemble.pt averaging the K fold models")
    p.add_argument("--refit", action="store_true", help="then retrain the same schedule on every labelled image: OUT/final.pt, the model to ship (best.pt's test metrics are its estimate; with --cv: the folds' median LRs, thresholds tuned out-of-fold)")
    _add_tracking_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="the main job: train the default recipe (or reuse/resume the run in --out) and report")
    _add_train_args(p)
    p.add_argument("--out", default="runs/default", help="run folder (default: %(default)s)")
    p.add_argument("--no-refit", action="store_true", help="ship best.pt as it is instead of retraining it on every labelled image (final.pt)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("distill", help="train the recipe on a teacher's (e.g. an ensemble's) probabilities mixed with the labels; it predicts at one model's cost")
    _add_train_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint: an ensemble (scenetag ensemble) or one model, with the data's labels")
    p.add_argument("--teacher-weight", type=_bounded(float, 0, 1), default=None, help="share of the teacher in the targets, the rest the labels (default: train.teacher_weight)")
    p.add_argument("--out", default="runs/distill", help="run folder (default: %(default)s)")
    p.add_argument("--refit", action="store_true", help="then retrain the same schedule on every labelled image (OUT/final.pt)")
    _add_tracking_args(p)
    p.set_defaults(func=cmd_distill, resume=None, cv=0, ensemble=False)

    p = sub.add_parser("refit", help="retrain a finished run's schedule on every labelled image: RUN/final.pt, the model to ship")
    p.add_argument("run", help="a finished run folder (of train, or run --no-refit)")
    _common(p, quiet=True)
    p.set_defaults(func=cmd_refit)

    p = sub.add_parser("audit", help="find suspected label errors: out-of-fold probabilities of a K-fold run, a score for every (image, label)")
    _add_train_args(p)
    p.add_argument("--out", default="runs/audit", help="audit folder: suspects.csv, scores.csv, report.html (default: %(default)s)")
    p.add_argument("--cv", type=_bounded(int, 2, 100), default=5, metavar="K", help="folds of the cross-validation it trains (default: %(default)s)")
    p.add_argument("--from-cv", metavar="CV_DIR", default=None, help="score a finished `train --cv K` folder instead of training one")
    p.add_argument("--ranking", choices=RANKINGS, default=RANKINGS[0], help="cleanlab: its per-class label quality (self-confidence) and confident-learning filter; margin: distance past the label's tuned threshold, scaled to [-1, 1] (default: %(default)s)")
    cuts = "; ".join(f"{r} {v[0]:g} / {v[1]:g}" for r, v in DEFAULT_CUTOFFS.items())
    p.add_argument("--min-score", type=_bounded(float, -1.0, 1.0), default=None, metavar="S", help=f"list as suspects only pairs scoring above S (defaults, suspect / accept: {cuts})")
    p.add_argument("--accept-above", type=_bounded(float, -1.0, 1.0), default=None, metavar="S", help="labels.suggested.csv accepts the suspects scoring above S, unseen (default: per ranking, as above)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("lr-find", help="LR finder for one phase: plot + suggested LR")
    _add_train_args(p)
    p.add_argument("--out", default="runs/lr-find", help="output folder for the plot and data (default: %(default)s)")
    p.add_argument("--phase", type=_bounded(int, 1), default=1, help="which phase of the recipe, from 1 (default: 1 = head only)")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("compare", help="test metrics of finished runs and cross-validations side by side, with the config keys that differ")
    p.add_argument("runs", nargs="+", metavar="RUN_OR_CV_DIR", help="two or more finished run folders (train, run: result.json) or cross-validation folders (train --cv K: mean ± std over folds)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write DIR/compare.html, the same tables, sortable by clicking a column header (default: print only)")
    p.add_argument("--sort", choices=METRIC_KEYS, default=METRIC_KEYS[0], metavar="METRIC", help=f"order the runs best first by this test metric: higher first, lower first for the losses ({', '.join(METRIC_KEYS)}; default: %(default)s)")
    _common(p, quiet=False)
    p.set_defaults(func=cmd_compare)


def _add_model_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics, per-label table, pictures and report.html for a model on data")
    p.add_argument("--model", required=True, help="checkpoint (.pt), exported .onnx, or a run folder (its final.pt, else best.pt; with --split its best.pt)")
    _add_data_args(p, default=None)
    p.add_argument("--split", choices=["test", "val"], default=None, help="evaluate a run's held-out split (--data RUN_DIR, default: the model's folder)")
    p.add_argument("--out", default="runs/evaluate", help="output folder (default: %(default)s)")
    p.add_argument("--no-fallback", action="store_true", help="do not give label-less images their most probable label")
    _add_max_pixels(p, default=None)
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="tag new images (files, folders, globs)")
    p.add_argument("--model", required=True, help="checkpoint (.pt), exported .onnx, or a run folder (its final.pt, else best.pt)")
    p.add_argument("paths", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--output", default=None, help="write predictions to this file instead of a table")
    p.add_argument("--output-format", choices=["csv", "json"], default="csv", help="format of --output (default: %(default)s)")
    p.add_argument("--format", dest="output_format", choices=["csv", "json"], action=_Deprecated, new="--output-format", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=_bounded(int, 1, 4096), default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--shard", default=None, metavar="I/N", help="only the I-th of N interleaved shards of the inputs")
    p.add_argument("--no-fallback", action="store_true", help="do not give label-less images their most probable label")
    _add_max_pixels(p)
    _common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ensemble", help="average several checkpoints into one ensemble checkpoint")
    p.add_argument("models", nargs="+", help="two or more .pt checkpoints (or run folders) with the same classes")
    p.add_argument("--out", required=True, help="ensemble checkpoint to write")
    p.add_argument("--weights", type=_bounded(float, 0), nargs="+", default=None, help="one weight per model (default: equal)")
    p.add_argument("--tune-on", default=None, metavar="RUN_DIR", help="tune thresholds on this run's val part and report its test part (default: mean of the members' thresholds)")
    _common(p)
    p.set_defaults(func=cmd_ensemble)


def _add_deploy_commands(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (verified with ONNX Runtime) or TorchScript")
    p.add_argument("--model", required=True, help="checkpoint (.pt) to export, or a run folder (its final.pt, else best.pt)")
    p.add_argument("--to", choices=["onnx", "torchscript"], default="onnx", help="export format (default: %(default)s)")
    p.add_argument("--format", dest="to", choices=["onnx", "torchscript"], action=_Deprecated, new="--to", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="output file (default: beside the checkpoint, .onnx or .ts)")
    _common(p, quiet=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="web service + page for a checkpoint or .onnx model")
    p.add_argument("--model", required=True, help="checkpoint (.pt), exported .onnx, or a run folder (its final.pt, else best.pt) to serve")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s, loopback only)")
    p.add_argument("--port", type=_bounded(int, 0, 65535), default=8000, help="TCP port, 0 for any free one (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=_bounded(float, 0.001, 10_000), default=10.0, help="largest request body in MB (default: %(default)s)")
    p.add_argument("--max-files", type=_bounded(int, 1, 10_000), default=16, help="most images per request (default: %(default)s)")
    p.add_argument("--body-timeout", type=_bounded(float, 0.1, 3600), default=10.0, help="seconds to wait for the next piece of an upload before dropping it (default: %(default)s)")
    p.add_argument("--header-timeout", type=_bounded(float, 0.1, 3600), default=10.0, help="seconds a connection may take to send its request headers (default: %(default)s)")
    p.add_argument("--max-request-mpx", type=_bounded(float, 90, 100_000), default=179.0, help="megapixels all images of one request may decode together, read from their headers first (default: %(default)s)")
    p.add_argument("--max-connections", type=_bounded(int, 1, 10_000), default=64, help="concurrent connections; more get 503 at once (default: %(default)s)")
    p.add_argument("--max-batch", type=_bounded(int, 1, 1024), default=ServeLimits.max_batch, help="images per forward pass: concurrent requests are batched together (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=_bounded(float, 0, 10_000), default=ServeLimits.max_wait_ms, help="longest an image waits for others to join its batch, only while more are arriving (default: %(default)s)")
    p.add_argument("--max-queue", type=_bounded(int, 1, 1_000_000), default=ServeLimits.max_queue, help="images waiting for inference; beyond it requests get 503 + Retry-After (default: %(default)s)")
    p.add_argument("--token", default=None, help=f"secret every data request must carry (Authorization: Bearer ...); required off loopback (default: ${TOKEN_ENV})")
    p.add_argument("--no-auth", action="store_true", help="allow a non-loopback --host without a token (anyone who reaches the port may call it)")
    _common(p, quiet=False)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("review", help="review an audit's suspected label errors in the browser; writes labels.reviewed.csv (the original labels are never changed)")
    p.add_argument("--audit", required=True, help="an audit folder (scenetag audit --out DIR)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s, loopback only; any other needs --token)")
    p.add_argument("--port", type=_bounded(int, 0, 65535), default=8001, help="TCP port, 0 for any free one (default: %(default)s)")
    p.add_argument("--token", default=None, help=f"secret every request must carry (Authorization: Bearer ..., or ?token= in the page's address); required off loopback (default: ${TOKEN_ENV})")
    _common(p, quiet=False)
    p.set_defaults(func=cmd_review)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenetag", description="Multi-label natural scene tagging.")
    parser.add_argument("--version", action="version", version=f"scenetag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_deploy_commands(sub)
    return parser


# --------------------------------------------------------------------------- entry point


def _interrupted(args: argparse.Namespace) -> str:
    from .runs import RunDir

    run = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command in ("train", "run") and run and RunDir(run).is_started() and not getattr(args, "cv", 0):
        return f"interrupted; the last finished epoch is saved in {RunDir(run).last}; continue with: scenetag train --resume {run}"
    return "interrupted"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0 and not os.environ.get("SCENETAG_LOG_ALL_RANKS"):
        level = logging.WARNING  # under torchrun only rank 0 talks
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        try:
            return int(args.func(args) or EXIT_OK)
        except ModuleNotFoundError as e:
            raise missing_extra(e, f"scenetag {args.command}") from None
    except ScenetagError as e:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # disk full, permission denied, busy port, ...: name the file, no traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate the README's results and speed tables from run folders and measurement files (not a test).

Two steps:

1. ``--collect``: read the run folders the README's commands write and store
   what the tables need, with the config, versions and commit they came from,
   in ``docs/figures/*.json`` (committed):

   * ``make_run.json``     from ``runs/default`` (``make run``: run.json, result.json, config, split)
   * ``cv5.json``          from ``runs/cv5`` (``scenetag train --cv 5 --out runs/cv5``)
   * ``cv5_best.json``     from ``runs/cv5_best`` (``... --preset best --out runs/cv5_best``)
   * ``ensemble_cv5.json`` from ``runs/cv5/ensemble_cv_checkpoint.json`` (``bench/ensemble_cv.py runs/cv5 runs/cv5_best --checkpoint``)
   * ``best_split.json``   from ``runs/best`` (``scenetag train --preset best --out runs/best``)
   * ``ensemble_split.json`` from ``runs/ensemble.pt`` (``scenetag ensemble ... --tune-on runs/default``)
   * ``train_speed.json``, ``predict_speed.json`` and ``cli_startup.json`` are written by
     ``bench/train_speed.py --json``, ``bench/predict_speed.py --json`` and ``bench/cli_startup.py --json`` directly;
     ``refit_cv5_all.json`` by ``bench/refit_cv.py runs/cv5 --until all --json ...`` and
     ``distill_cv5_wW.json`` by ``bench/distill_cv.py runs/cv5 --weight W --out ... --json ...``;
     ``predict_speed_ensemble.json`` / ``predict_speed_student.json`` by ``bench/predict_speed.py --model ... --json ...``;
     ``heads_cv5.json`` by ``bench/heads_cv.py runs/cv5 runs/cv5_csra ... --json ...`` (spatial heads and bags, same folds),
     ``predict_speed_bag.json`` by ``bench/predict_speed.py --model runs/cv5_bag_lse/fold1/best.pt ...``.

2. (always) rewrite the README blocks between ``<!-- figures:NAME -->`` and
   ``<!-- /figures:NAME -->`` from those files. ``--check`` only compares and
   exits 1 when the README is stale (``tests/test_readme_figures.py`` does the same).

Usage: ``.venv/bin/python bench/readme_figures.py [--collect] [--check]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
README = ROOT / "README.md"
SHOWN = ("samples_f1", "micro_f1", "macro_f1", "hamming_loss", "subset_accuracy", "mAP")
# Keys that say where a run was, not what it did: left out when configs are compared.
MACHINE_KEYS = (("data", "path"), ("train", "cache_dir"))


# --------------------------------------------------------------------------- collecting


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def portable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A run's config without the machine-specific paths."""
    out = json.loads(json.dumps(cfg))
    for section, key in MACHINE_KEYS:
        out[section].pop(key, None)
    return out


def _provenance(run) -> dict[str, Any]:
    from scenetag.config import load_config

    versions = json.loads(run.versions.read_text()) if run.versions.is_file() else {}
    return {"config": portable_config(load_config(run.config).to_dict()), "versions": versions, "commit": _commit(), "machine": machine()}


def machine() -> dict[str, Any]:
    """The CPU the figures were measured on: float rounding in its kernels shapes the training trajectory."""
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cpu_count": os.cpu_count()}


def collect_make_run(path: Path) -> dict[str, Any]:
    from scenetag.runs import RunDir

    run = RunDir(path)
    record = json.loads(run.summary.read_text())
    if record["reused"]:
        raise SystemExit(f"{run.summary}: the last `scenetag run` reused a finished run; remove {run} and run `make run` again for its timing")
    split = json.loads(run.split.read_text())
    return {"command": "make run", "test": record["test"], "seconds": record["seconds"], "split": {k: len(v) for k, v in split.items()}} | _provenance(run)


def collect_cv(path: Path, command: str) -> dict[str, Any]:
    from scenetag.runs import RunDir

    run = RunDir(path)
    cv = json.loads(run.cv_summary.read_text())
    return {"command": command, "k": cv["k"], "mean": cv["mean"], "std": cv["std"], "seconds": sum(s or 0 for s in cv["seconds"])} | _provenance(run.fold(0))


def collect_split_run(path: Path, command: str) -> dict[str, Any]:
    from scenetag.runs import RunDir

    run = RunDir(path)
    result = json.loads(run.result.read_text())
    return {"command": command, "test": result["metrics"]["test"], "train_seconds": result["train_seconds"]} | _provenance(run)


def collect_ensemble_checkpoint(path: Path, tuned_on: Path, command: str) -> dict[str, Any]:
    from scenetag.checkpoint import read_checkpoint
    from scenetag.runs import RunDir

    meta = read_checkpoint(path)["meta"]
    return {"command": command, "test": meta["metrics"]["test"], "members": [m["source"] for m in meta["members"]]} | _provenance(RunDir(tuned_on))


def collect(runs: Path) -> None:
    from scenetag.errors import ScenetagError
    from scenetag.io import atomic_write_json

    FIGURES.mkdir(parents=True, exist_ok=True)
    jobs = {
        "make_run.json": lambda: collect_make_run(runs / "default"),
        "cv5.json": lambda: collect_cv(runs / "cv5", "scenetag train --cv 5 --out runs/cv5"),
        "cv5_best.json": lambda: collect_cv(runs / "cv5_best", "scenetag train --cv 5 --preset best --out runs/cv5_best"),
        "ensemble_cv5.json": lambda: json.loads((runs / "cv5" / "ensemble_cv_checkpoint.json").read_text()) | {"commit": _commit()},
        "best_split.json": lambda: collect_split_run(runs / "best", "scenetag train --preset best --out runs/best"),
        "ensemble_split.json": lambda: collect_ensemble_checkpoint(runs / "ensemble.pt", runs / "default", "scenetag ensemble runs/default/best.pt runs/best/best.pt --tune-on runs/default --out runs/ensemble.pt"),
    }
    for name, job in jobs.items():
        try:
            atomic_write_json(FIGURES / name, job())
            print(f"collected {FIGURES / name}")
        except FileNotFoundError as e:
            print(f"skipped {name}: {e.filename} not found")
        except ScenetagError as e:
            print(f"skipped {name}: {e}")


# --------------------------------------------------------------------------- rendering


def load_figures() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(FIGURES.glob("*.json"))}


def _cells(values: dict[str, float], std: dict[str, float] | None = None, bold: bool = False) -> str:
    def one(k: str) -> str:
        digits = 3 if k == "subset_accuracy" else 4
        text = f"{values[k]:.{digits}f}" + (f" ± {std[k]:.{digits}f}" if std else "")
        return f"**{text}**" if bold else text

    return " | ".join(one(k) for k in SHOWN)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _recipe_name(row: dict[str, Any]) -> str:
    """A head / bag recipe of ``bench/heads_cv.py`` in words."""
    if row["bag"]:
        return f"bag of {len(row['bag'])} views (image + {len(row['bag']) - 1} corner regions), `{row['bag_pool']}` pooling, `{row['head']}` head"
    return f"`{row['head']}` spatial head" + (" (" + ", ".join(f"{k.split('_', 1)[1]} {v:g}" for k, v in row["head_options"].items()) + ")" if row["head_options"] else "")


def render_results(f: dict[str, dict[str, Any]]) -> str:
    head = "| run | samples-F1 | micro-F1 | macro-F1 | Hamming | subset acc. | mAP | wall time |\n|---|---|---|---|---|---|---|---|"
    rows = ["| reference (fastai ResNet50, 12% val; its published figure, not run here) | 0.8885 | | | | | | hours |"]
    if "cv5" in f:
        rows.append(f"| **default, `{f['cv5']['command']}`** (5-fold, mean ± std) | {_cells(f['cv5']['mean'], f['cv5']['std'], True)} | {_minutes(f['cv5']['seconds'])} of training for 5 folds |")
    if "cv5_best" in f:
        rows.append(f"| **`--preset best`, `{f['cv5_best']['command']}`** (5-fold) | {_cells(f['cv5_best']['mean'], f['cv5_best']['std'], True)} | {_minutes(f['cv5_best']['seconds'])} of training for 5 folds |")
    if "ensemble_cv5" in f:
        e = f["ensemble_cv5"]["ensemble"]
        rows.append(f"| **ensemble of the two as one checkpoint** (5-fold, `{f['ensemble_cv5']['command']}`) | {_cells(e['mean'], e['std'], True)} | both recipes |")
    if "refit_cv5_all" in f:
        r = f["refit_cv5_all"]
        rows.append(f"| default + refit on train + val, val thresholds (what `scenetag run` ships as `final.pt`; 5-fold, `{r['command']}`) | {_cells(r['refit_val']['mean'], r['refit_val']['std'], True)} | {_minutes(sum(r['refit_train_seconds']))} of refits for 5 folds |")
        rows.append(f"| default + refit, thresholds tuned out-of-fold (`scenetag train --cv 5 --refit`; same folds) | {_cells(r['refit_oof']['mean'], r['refit_oof']['std'], True)} | |")
    if "distill_cv5_w0.5" in f:
        d = f["distill_cv5_w0.5"]
        rows.append(f"| Lite0 student distilled from the ensemble (teacher weight {d['teacher_weight']}; 5-fold, `{d['command']}`) | {_cells(d['mean'], d['std'], True)} | {_minutes(sum(s or 0 for s in d['seconds']))} of training for 5 folds |")
    for row in f.get("heads_cv5", {}).get("rows", [])[1:]:  # the first row is the default recipe (above)
        rows.append(f"| {_recipe_name(row)} (5-fold, `{row['command']}`) | {_cells(row['mean'], row['std'])} | {_minutes(sum(row['fold_seconds']))} of training for 5 folds |")
    if "make_run" in f:
        m, sp = f["make_run"], f["make_run"]["split"]
        refit = f" + refit {m['seconds']['refit']:.0f} s" if "refit" in m["seconds"] else ""
        rows.append(f"| default, `make run`: stratified {sp['train']:,} train / {sp['val']} val / {sp['test']} test, test part (held-out estimate of `best.pt`) | {_cells(m['test'])} | {_minutes(m['seconds']['total'])} (whole `make run` without the install; training {m['seconds']['train']:.0f} s{refit}) |")
    if "best_split" in f:
        rows.append(f"| `--preset best` on the same split (`{f['best_split']['command']}`), test part | {_cells(f['best_split']['test'])} | trained in {f['best_split']['train_seconds']:.0f} s |")
    if "ensemble_split" in f:
        rows.append(f"| ensemble of the two on the same split (`scenetag ensemble ... --tune-on runs/default`), test part | {_cells(f['ensemble_split']['test'])} | |")
    return "\n".join([head] + rows)


def render_speed(f: dict[str, dict[str, Any]]) -> str:
    rows = ["| what | figure |", "|---|---|"]
    if "train_speed" in f:
        t = f["train_speed"]
        per = ", ".join(f"{ph} {v['cached_s_per_epoch']:.1f} vs {v['uncached_s_per_epoch']:.1f} ({v['speedup']:.1f}x)" for ph, v in t["phases"].items())
        images = "the default split's training" if t["images"] == "all" else t["images"]
        views = len(t["views"].strip("[]").split(","))
        rows.append(f"| training, seconds per epoch, cached vs recomputing the same frozen part every batch (`{t['command']}`, {images} images x {views} views, steady state) | {per} |")
        rows.append(f"| same schedule ({t['epochs_per_phase']} epochs per phase), whole run incl. caching pass and evaluation | {t['whole_run_s']['cached']} s cached vs {t['whole_run_s']['uncached']} s uncached |")
    if "cli_startup" in f:
        c = f["cli_startup"]["median_seconds"]
        rows.append(f"| `scenetag --help` / `--version` / `train --help`, fresh process (`{f['cli_startup']['command']}`) | {c['--help']:.2f} / {c['--version']:.2f} / {c['train --help']:.2f} s |")
    if "predict_speed" in f:
        p = f["predict_speed"]
        e2e = {(r["engine"], r["tta"]): r["img_per_s"] for r in p["end_to_end"]}
        rows.append(f"| prediction, model only (ONNX Runtime, batch {p['batch']}, pre-decoded; `{p['command']}`) | {p['model_only_onnx']} img/s |")
        rows.append(f"| prediction end to end on JPEGs, ONNX Runtime, TTA off / on | {e2e[('ONNX Runtime', False)]} / {e2e[('ONNX Runtime', True)]} img/s |")
        rows.append(f"| prediction end to end on JPEGs, PyTorch channels_last, TTA off / on | {e2e[('PyTorch (channels_last)', False)]} / {e2e[('PyTorch (channels_last)', True)]} img/s |")
    for name, what in (("predict_speed_ensemble", "the Lite0 + Lite2 ensemble (teacher)"), ("predict_speed_student", "its distilled Lite0 student"), ("predict_speed_bag", "a bag model (Lite0, image + 4 regions per image)")):
        if name in f:
            p = f[name]
            e2e = {(r["engine"], r["tta"]): r["img_per_s"] for r in p["end_to_end"]}
            rows.append(f"| prediction of {what}: model only / end to end ONNX Runtime TTA off / on (`{p['command']}`) | {p['model_only_onnx']} / {e2e[('ONNX Runtime', False)]} / {e2e[('ONNX Runtime', True)]} img/s |")
    rows += _serving_rows(f)
    return "\n".join(rows)


def _serving_rows(f: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    if "serve_load" in f:
        s = f["serve_load"]
        for name, result in s["served"].items():
            for r in result["load"]:
                rows.append(
                    f"| `scenetag serve`, {name}: {r['clients']} concurrent single-image clients, {s['images']} images (`{s['command']}`) | {r['images_per_s']:.1f} img/s "
                    f"= {r['images_per_s'] / s['cli_images_per_s']:.2f}x `scenetag predict` on the same ONNX model and TTA ({s['cli_images_per_s']:.1f} img/s); p50 / p95 {r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms; "
                    f"`/health` p99 {r['health_p99_ms']:.0f} ms; {r['non_2xx']} non-2xx, {r['wrong']} answers unlike the CLI's |"
                )
            one = result["single_client"]
            rows.append(f"| `scenetag serve`, {name}: one client alone, single-image requests | p50 / p95 {one['p50_ms']:.0f} / {one['p95_ms']:.0f} ms |")
    if "install_size" in f:
        i = f["install_size"]
        rows.append(f"| install on disk: slim (`pip install scenetag`: ONNX predict + serve, {len(i['slim_packages'])} packages, no torch) vs full (`make test`'s venv) (`{i['command']}`) | {i['slim_mb']} MB vs {i['full_mb']} MB |")
    return rows


RENDERERS = {"results": render_results, "speed": render_speed}


def rewrite(text: str, figures: dict[str, dict[str, Any]]) -> str:
    """``text`` with every ``<!-- figures:NAME -->`` block replaced by its rendering."""
    for name, render in RENDERERS.items():
        pattern = re.compile(rf"(<!-- figures:{name} -->\n).*?(\n<!-- /figures:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- figures:{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + render(figures) + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collect", action="store_true", help="first read the run folders into docs/figures/*.json")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the run folders are (default: runs/)")
    ap.add_argument("--check", action="store_true", help="only check that the README matches docs/figures (exit 1 if not)")
    args = ap.parse_args()
    if args.collect:
        collect(args.runs)
    text = README.read_text()
    new = rewrite(text, load_figures())
    if args.check:
        print("README figures up to date" if new == text else "README figures are stale: run bench/readme_figures.py")
        return 0 if new == text else 1
    if new != text:
        README.write_text(new)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

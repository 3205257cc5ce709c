"""``scenetag run`` / ``make run``: explore the data, train (or reuse / resume the run), evaluate the test part,
then refit on every image (``final.pt``, the model the run ships; see :mod:`scenetag.train.refit`).

Writes ``RUN/run.json``: how long each step took and the test metrics, so the
README's figures can be regenerated from a run folder (``bench/readme_figures.py``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ..config import Config
from ..data.label_issues import cleanlab_flags
from ..data.layouts import load_dataset
from ..infer.outputs import read_label_columns, read_probabilities
from ..io import atomic_write_json
from ..metrics import METRIC_KEYS
from ..runs import REPORT_PAGE, RunDir
from ..train.dashboard import write_dashboard
from ..train.recipe import train_or_resume
from ..train.rundata import load_run_data
from ..train.refit import refit as refit_run
from .evaluate import evaluate_checkpoint
from .explore import explore

Say = Callable[[str], None]


def test_label_suspects(run: RunDir) -> dict[str, int]:
    """Likely label errors among the test part's (image, label) pairs: cleanlab's filter on best.pt's test probabilities."""
    classes = list(load_run_data(run.path)[0].classes)
    given, _ = read_label_columns(run.test_predictions, classes)
    flagged = cleanlab_flags(given, read_probabilities(run.test_predictions, classes))
    return {"pairs": int(flagged.sum()), "images": int(flagged.any(1).sum()), "test_images": len(given)}


def main_job(cfg: Config, run_dir, progress: bool = True, say: Say = lambda line: None, refit: bool = True) -> dict[str, Any]:
    """Explore, train or reuse, evaluate, refit; ``say`` receives the lines a person wants to see as each step ends.

    Without a held-out part (``data.val`` and ``data.test`` 0) the run already trained on everything: no refit.
    """
    run = RunDir(run_dir)
    seconds: dict[str, float] = {}
    t0 = time.time()
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    summary = explore(ds, run.explore, max_pixels=cfg.data.max_pixels)
    seconds["explore"] = time.time() - t0
    say("\n".join(summary["text"]) + f"\nexploration report: {run.explore / REPORT_PAGE}")
    t1 = time.time()
    result = train_or_resume(cfg, run.path, progress=progress)
    seconds["train"] = time.time() - t1
    evaluation = None
    if "test" in result["metrics"]:
        t2 = time.time()
        evaluation = evaluate_checkpoint(run.best, run.evaluation, data=run.path, split="test", progress=progress)
        seconds["evaluate"] = time.time() - t2
    refitted = None
    if refit and (cfg.data.val or cfg.data.test):
        t3 = time.time()
        refitted = refit_run(run.path, progress=progress)
        seconds["refit"] = time.time() - t3
    seconds["total"] = time.time() - t0
    record = {
        "reused": bool(result.get("reused")),
        "final": {"path": refitted["final"], "n_images": refitted["n_images"], "train_seconds": refitted["train_seconds"]} if refitted else None,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "train_seconds": result.get("train_seconds"),
        "test": {k: evaluation[k] for k in METRIC_KEYS} | {"n_images": evaluation["n_images"]} if evaluation else None,
        "label_suspects_in_test": test_label_suspects(run) if evaluation else None,
    }
    atomic_write_json(run.summary, record)
    write_dashboard(run.path)  # now with the evaluation, final.pt and the step times
    return {"result": result, "evaluation": evaluation, "refit": refitted, "record": record, "dashboard": str(run.dashboard)}

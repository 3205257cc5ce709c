"""The data a run was trained on, found again: its absolute path and fingerprint are recorded in the
run folder (``data.json``) and checked whenever the run's images are read later (resume, evaluate
--split, ensemble --tune-on), so another folder of the same name is never scored silently.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..config import load_config
from ..data.dataset import MultiLabelDataset, fingerprint
from ..data.layouts import load_dataset
from ..data.splits import Split
from ..errors import DataError
from ..io import atomic_write_json
from ..runs import RunDir


def record_data(run: RunDir, ds: MultiLabelDataset) -> None:
    atomic_write_json(run.data_identity, {"path": str(ds.root), "n_images": len(ds), "fingerprint": fingerprint(ds)})


def check_data(run: RunDir, ds: MultiLabelDataset, split: Split) -> None:
    """The images now at the run's data path must be the ones it was trained on (runs from before data.json:
    at least as many as its split refers to)."""
    n = len(ds)
    if any(len(idx) and int(idx.max()) >= n for idx in (split.train, split.val, split.test)):
        raise DataError(f"{run.split}: refers to images beyond the {n} of {ds.root}; the data changed since the run was trained")
    if not run.data_identity.is_file():
        return
    then = json.loads(run.data_identity.read_text())
    now = fingerprint(ds)
    if now != then["fingerprint"]:
        raise DataError(
            f"{ds.root}: not the data {run} was trained on ({len(ds)} images now, {then['n_images']} then at {then['path']}; "
            f"fingerprint {now} vs {then['fingerprint']}); restore that data or train a new run"
        )


def load_run_data(run_dir: Path | str) -> tuple[MultiLabelDataset, Split]:
    """A run folder's data set (checked against its record) and split."""
    run = RunDir(run_dir)
    if not run.split.is_file():
        raise DataError(f"{run}: not a run folder (no split.json)")
    split = Split.read(run.split)
    cfg = load_config(run.config)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    check_data(run, ds, split)
    return ds, split


def load_run_parts(run_dir: Path | str, parts: Sequence[str] = ("val", "test")) -> dict[str, MultiLabelDataset]:
    """The images of a run folder's held-out ``parts`` (``val``/``test``)."""
    ds, split = load_run_data(run_dir)
    return {part: ds.subset(getattr(split, part)) for part in parts}

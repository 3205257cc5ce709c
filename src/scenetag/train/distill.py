"""Distillation: a teacher's probabilities on every cached view of every training image as soft targets.

The teacher (an ensemble checkpoint, or one model) is run once per member over
the same (image, view) pairs the student trains on -- the same per-image seeds,
so the same crops, each at the member's own input size -- through the activation
cache (a member's frozen part is the pretrained network, so a cache its own run
left behind is found again). Targets are then, per image and view,
``(1 - w) * labels + w * teacher probability``: BCE with that target equals the
w-weighted mix of BCE on the labels and BCE on the teacher. Computed once and
kept in the cache folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checkpoint import read_checkpoint
from ..config import Config, config_from_dict
from ..data.dataset import MultiLabelDataset
from ..data.preprocessing import Preprocessing
from ..errors import CheckpointError, ConfigError
from ..io import atomic_path
from ..model_meta import validate_meta
from ..models import from_meta
from ..models.net import MultiLabelNet
from ..runs import RunDir
from ..data.splits import Split
from .batches import view_logits
from .cache import build_cache
from .setup import TrainingSetup, model_identity, phase_boundaries

log = logging.getLogger(__name__)


@dataclass
class TeacherMember:
    """One network of the teacher and what is needed to run it from a cache."""

    model: MultiLabelNet
    pp: Preprocessing
    weight: float
    temperatures: np.ndarray  # per label (ones when none were fitted)
    boundary: int  # the lowest piece it trained: activations entering it come from the pretrained network
    taps: list[int]  # the boundaries its own training cached, so that cache is found again
    identity: dict[str, Any]  # the network its frozen part is (cache key)
    cache_dtype: str
    source: str  # the checkpoint it came from: its run folder says which images it trained on


def _training_meta(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """Where a member's training is described: the member itself (``boundary``, ``config``), else its source checkpoint."""
    if "boundary" in spec and spec.get("config"):
        return spec
    source = spec.get("source")
    if source and Path(source).is_file():
        return read_checkpoint(source)["meta"]
    raise CheckpointError(f"{where}: member {spec.get('backbone')} does not say which piece it was trained from and its source {source!r} is gone; rebuild the ensemble with `scenetag ensemble`")


def _member(net: MultiLabelNet, spec: dict[str, Any], weight: float, n_classes: int, where: str) -> TeacherMember:
    training = _training_meta(spec, where)
    cfg: Config = config_from_dict(training["config"])
    temps = np.asarray(spec.get("temperatures") or [1.0] * n_classes, dtype=np.float64)
    pp = Preprocessing.from_dict(spec["preprocessing"])
    return TeacherMember(net.eval(), pp, weight, temps, int(training["boundary"]), phase_boundaries(net, cfg), model_identity(cfg), cfg.train.cache_dtype, spec.get("source") or where)


def load_teacher(path: Path | str, classes: Sequence[str]) -> list[TeacherMember]:
    """The members of a teacher checkpoint, weights normalised; its labels must be the data's."""
    payload = read_checkpoint(path)
    meta = validate_meta(payload["meta"], str(path))
    if meta["classes"] != list(classes):
        raise ConfigError(f"{path}: the teacher's labels {meta['classes']} are not the data's {list(classes)}")
    if meta.get("bag"):
        raise ConfigError(f"{path}: a bag model (model.bag) cannot teach yet: distillation needs a teacher that scores single views")
    model = from_meta(meta)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the described model ({str(e).splitlines()[0]})") from None
    if not meta.get("members"):
        return [_member(model, meta, 1.0, len(classes), str(path))]
    specs = meta["members"]
    total = sum(float(s["weight"]) for s in specs)
    return [_member(net, spec, float(spec["weight"]) / total, len(classes), str(path)) for net, spec in zip(model.members, specs)]


def teacher_probabilities(members: Sequence[TeacherMember], ds: MultiLabelDataset, ids: np.ndarray, kinds: list[str], cfg: Config, cache_dir: Path | None, progress: bool = True) -> np.ndarray:
    """The teacher's probability for every (image, view): shape (len(ids), len(kinds), classes)."""
    t = cfg.train
    total = np.zeros((len(ids), len(kinds), len(ds.classes)))
    for m in members:
        acts = build_cache(
            m.model, m.identity, ds.subset(ids), kinds, taps=m.taps, pp=m.pp, seed=t.seed, cache_dir=cache_dir, batch_size=t.batch_size,
            engine=t.engine, dtype=m.cache_dtype, in_memory_gb=t.cache_in_memory_gb, max_pixels=cfg.data.max_pixels, progress=progress, ids=ids,
        )  # fmt: skip
        with torch.no_grad():
            logits = view_logits(m.model, acts, m.boundary, np.arange(len(ids)))
        total += m.weight / (1 + np.exp(-logits / m.temperatures))
    return total


def _targets_key(teacher: Path, ds: MultiLabelDataset, ids: np.ndarray, kinds: list[str], seed: int) -> str:
    """The teacher file (path, size, time) and the (image, view) pairs asked for: another of either is another key."""
    st = teacher.stat()
    blob = {"teacher": [str(teacher.resolve()), st.st_size, int(st.st_mtime)], "paths": [str(p) for p in ds.subset(ids).paths], "kinds": kinds, "seed": seed}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def held_out_seen_by_teacher(members: Sequence[TeacherMember], setup: TrainingSetup) -> int:
    """How many of the student's held-out images a teacher member trained on (val or test) or selected on (test).

    Only members whose run folder records its data and split can be checked.
    """
    held = set(np.concatenate([setup.split.val, setup.split.test]).tolist())
    seen: set[int] = set()
    for member in members:
        run = RunDir(Path(member.source).parent)
        if not run.split.is_file() or not run.data_identity.is_file():
            continue
        if json.loads(run.data_identity.read_text()).get("path") != str(setup.ds.root):
            continue
        split = Split.read(run.split)  # trained on the student's held-out images, or chose its epoch on the test part
        seen |= (held & set(split.train.tolist())) | (set(setup.split.test.tolist()) & set(split.val.tolist()))
    return len(seen)


def soft_targets(setup: TrainingSetup, members: Sequence[TeacherMember], cache_dir: Path | None, progress: bool = True) -> np.ndarray:
    """Blended targets for every row of the training cache, (rows, views, classes); read back when computed before."""
    cfg, ds, ids = setup.cfg, setup.ds, setup.layout.train_ids
    teacher = Path(cfg.train.teacher)
    leaked = held_out_seen_by_teacher(members, setup)
    if leaked:
        log.warning("the teacher %s trained on %d of this run's val/test images: its soft targets carry their labels, so this run's val and test metrics are optimistic", teacher, leaked)
    found = cache_dir / f"teacher-{_targets_key(teacher, ds, ids, cfg.train.views, cfg.train.seed)}.npy" if cache_dir else None
    if found is not None and found.is_file():
        probs = np.load(found)
    else:
        log.info("teacher %s: %d member(s), probabilities of %d images x %d views", teacher, len(members), len(ids), len(cfg.train.views))
        probs = teacher_probabilities(members, ds, ids, cfg.train.views, cfg, cache_dir, progress)
        if found is not None:
            with atomic_path(found) as tmp, open(tmp, "wb") as f:
                np.save(f, probs.astype(np.float32))
    w = cfg.train.teacher_weight
    return ((1 - w) * ds.labels[ids][:, None, :] + w * probs).astype(np.float32)

"""Distillation: soft targets are the teacher's probabilities on the very views the student trains on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scenetag.checkpoint import load_model
from scenetag.data.images import open_image
from scenetag.data.layouts import load_dataset
from scenetag.data.preprocessing import Preprocessing
from scenetag.data.transforms import image_seed, make_views
from scenetag.errors import ConfigError
from scenetag.infer.predictor import Predictor
from scenetag.runs import RunDir
from scenetag.train.distill import load_teacher, teacher_probabilities
from scenetag.train.recipe import train
from scenetag.workflows.ensemble import make_ensemble
from tests.conftest import tiny_cfg

EXACT = {"train.cache_dtype": "float32"}  # float16 caches would round the activations


@pytest.fixture(scope="module")
def teachers(synth_dir, tmp_path_factory):
    """Two tiny runs (seeds 0 and 1) and their ensemble."""
    root = tmp_path_factory.mktemp("teachers")
    runs = [RunDir(root / f"t{seed}") for seed in (0, 1)]
    for seed, run in enumerate(runs):
        train(tiny_cfg(synth_dir, **EXACT, **{"train.seed": seed}), run, progress=False)
    make_ensemble([runs[0].best, runs[1].best], root / "ens.pt", weights=[1.0, 3.0], progress=False)
    return runs, root / "ens.pt"


def _direct(checkpoint, ds, ids, kinds, seed) -> np.ndarray:
    """The model's probability on each view, from the images (no cache)."""
    model, meta = load_model(checkpoint)
    pp = Preprocessing.from_dict(meta["preprocessing"])
    with torch.no_grad():
        return np.stack([torch.sigmoid(model(make_views(open_image(ds.paths[i]), kinds, pp, image_seed(seed, int(i))))).numpy() for i in ids])


def test_soft_targets_are_the_teachers_probabilities_on_each_view(teachers, synth_dir, tmp_path):
    runs, _ = teachers
    cfg = tiny_cfg(synth_dir, **EXACT)
    ds = load_dataset(synth_dir)
    ids = np.array([3, 0, 17, 42])
    got = teacher_probabilities(load_teacher(runs[0].best, ds.classes), ds, ids, cfg.train.views, cfg, tmp_path / "cache", progress=False)
    assert got.shape == (4, len(cfg.train.views), len(ds.classes))
    assert np.allclose(got, _direct(runs[0].best, ds, ids, cfg.train.views, cfg.train.seed), atol=1e-5)


def test_an_ensemble_teacher_is_the_weighted_mean_of_its_members(teachers, synth_dir, tmp_path):
    runs, ensemble = teachers
    cfg = tiny_cfg(synth_dir, **EXACT)
    ds = load_dataset(synth_dir)
    ids = np.array([5, 9])
    got = teacher_probabilities(load_teacher(ensemble, ds.classes), ds, ids, cfg.train.views, cfg, tmp_path / "cache", progress=False)
    want = 0.25 * _direct(runs[0].best, ds, ids, cfg.train.views, 0) + 0.75 * _direct(runs[1].best, ds, ids, cfg.train.views, 0)
    assert np.allclose(got, want, atol=1e-5)


def test_a_teacher_with_other_labels_is_refused(teachers):
    runs, _ = teachers
    with pytest.raises(ConfigError, match="labels"):
        load_teacher(runs[0].best, ["a", "b"])


def _gap(student: RunDir, teacher: RunDir, ds) -> float:
    """Mean absolute difference of the two models' probabilities over the data set."""
    return float(np.abs(Predictor(student.best).dataset_probabilities(ds) - Predictor(teacher.best).dataset_probabilities(ds)).mean())


def test_distilling_into_an_identical_student_reaches_the_teachers_outputs(teachers, synth_dir, tmp_path):
    runs, _ = teachers
    ds = load_dataset(synth_dir)
    longer = {"train.phases": "[{name: head, epochs: 12, lr: 0.01, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 6, lr: 0.003}]", "train.mixup": 0.0}
    distilled, labels_only = RunDir(tmp_path / "student"), RunDir(tmp_path / "plain")
    train(tiny_cfg(synth_dir, **EXACT, **longer, **{"train.teacher": str(runs[0].best), "train.teacher_weight": 1.0}), distilled, progress=False)
    train(tiny_cfg(synth_dir, **EXACT, **longer), labels_only, progress=False)
    gap, plain_gap = _gap(distilled, runs[0], ds), _gap(labels_only, runs[0], ds)
    print(f"distilled {gap:.4f} labels only {plain_gap:.4f}")
    assert gap < 0.05 and gap < 0.5 * plain_gap


def test_a_teacher_that_saw_the_students_held_out_images_is_reported(teachers, synth_dir, tmp_path, caplog):
    runs, _ = teachers
    student = RunDir(tmp_path / "s")
    with caplog.at_level("WARNING"):
        train(tiny_cfg(synth_dir, **EXACT, **{"train.teacher": str(runs[1].best), "train.seed": 0}), student, progress=False)
    assert "trained on" in caplog.text and "optimistic" in caplog.text  # seed 1's split trains on seed 0's val/test images
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(tiny_cfg(synth_dir, **EXACT, **{"train.teacher": str(runs[0].best), "train.seed": 0}), RunDir(tmp_path / "s0"), progress=False)
    assert "optimistic" not in caplog.text  # the same split: the teacher never saw them

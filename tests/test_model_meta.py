"""A model's metadata is validated once, in one place, whether it comes from a checkpoint or an ONNX file."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from scenetag.checkpoint import load_model, read_checkpoint
from scenetag.errors import CheckpointError
from scenetag.model_meta import meta_problems

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def good_meta():
    return read_checkpoint(FIXTURES / "legacy_v1_model.pt")["meta"]


def _set(meta: dict, key: str, value) -> dict:
    out = copy.deepcopy(meta)
    *path, last = key.split(".")
    node = out
    for part in path:
        node = node[part]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return out


_DROP = object()
BAD = [
    ("thresholds", [float("nan")] * 5, "thresholds must hold 5 finite numbers"),
    ("thresholds", [0.5] * 4, "thresholds must be a list of 5 numbers"),
    ("temperatures", [0.0] * 5, "temperatures must hold 5 finite numbers in (0"),
    ("preprocessing", _DROP, "preprocessing is missing"),
    ("backbone", _DROP, "backbone is missing"),
    ("head", _DROP, "head is missing"),
    ("head_options", {"csra_lambda": "big"}, "head_options must map names to finite numbers"),
    ("bag", ["region_tl"], "bag must be a list of view names starting with orig"),
    ("preprocessing.size", 0, "preprocessing.size must be an integer in [1, 1024]"),
    ("preprocessing.interpolation", "lanczos9", "preprocessing.interpolation must be one of"),
    ("preprocessing.std", [0.5, 0.0, 0.5], "preprocessing.std must hold 3 finite numbers in (0"),
    ("classes", [], "classes must be a non-empty list"),
    ("classes", ["sea", "sea", "a", "b", "c"], "classes must be a non-empty list of distinct names"),
]


def test_a_good_model_has_no_problem(good_meta):
    assert meta_problems(good_meta) == []


@pytest.mark.parametrize("key, value, needle", BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_each_bad_field_is_named(good_meta, key, value, needle):
    problems = meta_problems(_set(good_meta, key, value))
    assert any(needle in p for p in problems), problems


def test_load_model_refuses_bad_metadata_in_one_line(good_meta, tmp_path):
    payload = torch.load(FIXTURES / "legacy_v1_model.pt", weights_only=True)
    payload["meta"] = _set(good_meta, "thresholds", [float("nan")] * 5)
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan.pt: unusable model metadata: thresholds must hold 5 finite numbers"):
        load_model(tmp_path / "nan.pt")


def test_onnx_sidecar_and_graph_are_checked(trained_run, tmp_path):
    import onnx

    from scenetag.infer.export import export_onnx
    from scenetag.infer.onnx import load_onnx

    _, run, _ = trained_run
    path = tmp_path / "m.onnx"
    export_onnx(run / "best.pt", path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]  # only the sidecar is left
    onnx.save(proto, str(path))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"m.json: not valid JSON"):
        load_onnx(path)
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in sidecar.items() if k != "classes"}))
    with pytest.raises(CheckpointError, match="classes must be a non-empty list"):
        load_onnx(path)
    wrong = copy.deepcopy(sidecar)
    wrong["preprocessing"]["size"] += 16
    path.with_suffix(".json").write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match=r"the graph takes \[\d+, \d+\] pixel inputs but its metadata says size"):
        load_onnx(path)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    assert load_onnx(path)[1]["classes"] == sidecar["classes"]

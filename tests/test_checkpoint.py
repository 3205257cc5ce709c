from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from scenetag.checkpoint import load_model, read_checkpoint, save_checkpoint
from scenetag.errors import CheckpointError
from scenetag.cli import main


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/scenetag_pwned",))


def test_round_trip_keeps_weights_and_meta(trained_run, tmp_path):
    _, run, _ = trained_run
    model, meta = load_model(run / "best.pt")
    out = save_checkpoint(tmp_path / "copy.pt", model, meta)
    model2, meta2 = load_model(out)
    assert meta2 == meta
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_other_format_version_is_refused(trained_run, tmp_path):
    _, run, _ = trained_run
    payload = torch.load(run / "best.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        read_checkpoint(tmp_path / "v99.pt")


def test_truncated_checkpoint(trained_run, tmp_path):
    _, run, _ = trained_run
    data = (run / "best.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t.pt: not a readable checkpoint"):
        load_model(tmp_path / "t.pt")


def test_code_executing_pickle_is_refused(tmp_path):
    marker = "/tmp/scenetag_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"format_version": 1, "meta": _Evil(), "state_dict": {}}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    # A torch file whose metadata would call os.system is refused as such; a bare pickle is not a torch file at all.
    for name, match in (("evil.pt", r"refused: .*unsupported GLOBAL"), ("evil.pkl", "not a readable checkpoint")):
        with pytest.raises(CheckpointError, match=match):
            load_model(tmp_path / name)
    assert not os.path.exists(marker)


def test_cli_reports_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("junk")
    assert main(["predict", "--model", str(tmp_path / "junk.pt"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "junk.pt" in err and "Traceback" not in err
    # Not a pickle at all: said plainly, not as "possibly code", and without torch's advice text.
    assert "not a readable checkpoint" in err and "refused" not in err and "Weights only load failed" not in err
    (tmp_path / "text.pt").write_text("garbage, a few more bytes than four\n")
    with pytest.raises(CheckpointError, match=r"text.pt: not a readable checkpoint \(not a PyTorch file: Unsupported operand"):
        load_model(tmp_path / "text.pt")


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name", ["legacy_v1_model", "legacy_v1_ensemble"])
def test_checkpoints_written_before_the_package_split_still_load_and_predict_the_same(name):
    """The fixtures were written by the code before the architecture change (see fixtures/README.md)."""
    from scenetag.infer.predictor import Predictor
    from scenetag.predict import Predictor as CompatPredictor

    assert CompatPredictor is Predictor  # the documented import path still works
    model, meta = load_model(FIXTURES / f"{name}.pt")
    assert meta["classes"] == ["desert", "mountains", "sea", "sunset", "trees"]
    want = json.loads((FIXTURES / f"{name}_probabilities.json").read_text())
    got = Predictor(FIXTURES / f"{name}.pt", num_workers=0).predict(sorted(FIXTURES.glob("legacy_img*.jpg")))
    for g, w in zip(got, want):
        assert g.error is None
        for c in meta["classes"]:
            assert g.probabilities[c] == pytest.approx(w[c], abs=1e-5)

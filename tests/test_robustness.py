"""Nothing lost: a training process killed with SIGKILL resumes to the same result."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenetag.train.recipe import train

from .conftest import tiny_cfg

PHASES = "[{name: head, unfreeze: 0.0, epochs: 12, lr: 0.003, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 12, lr: 0.002, lr_mult: 10.0}]"


def _rows(run):
    try:
        return list(csv.DictReader(open(run / "metrics.csv")))
    except (FileNotFoundError, csv.Error):
        return []


@pytest.mark.slow
def test_sigkill_mid_phase_then_resume_equals_uninterrupted(synth_dir, tmp_path):
    ref = train(tiny_cfg(synth_dir, **{"train.phases": PHASES}), tmp_path / "ref", progress=False)
    run = tmp_path / "killed"
    # A small driver: the same training as `scenetag train`, with each epoch slowed a little
    # (through the public epoch callback) so the kill lands inside the second phase.
    script = (
        "import sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from tests.conftest import tiny_cfg\n"
        "from scenetag.train.recipe import train\n"
        f"cfg = tiny_cfg(sys.argv[2], **{{'train.phases': {PHASES!r}}})\n"
        "train(cfg, sys.argv[3], progress=False, callbacks=[lambda state, model: time.sleep(0.3)])\n"
    )
    args = [sys.executable, "-c", script, str(Path(__file__).resolve().parents[1]), str(synth_dir), str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_rows(run)) < 15:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_rows(run))
    assert 12 < done < 24, f"kill landed after {done} epochs"
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    r = subprocess.run([sys.executable, "-m", "scenetag", "train", "--resume", str(run), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = json.loads((run / "result.json").read_text())
    assert len(_rows(run)) == 24
    assert resumed["metrics"]["test"]["samples_f1"] == ref["metrics"]["test"]["samples_f1"]
    assert resumed["metrics"]["test"]["bce_loss"] == pytest.approx(ref["metrics"]["test"]["bce_loss"], abs=1e-9)


def _no_space(*args, **kwargs):
    raise OSError(28, "No space left on device", str(args[1]) if len(args) > 1 else None)


def test_disk_full_keeps_previous_best(trained_run, tmp_path, monkeypatch):
    import scenetag.io
    from scenetag.checkpoint import load_model, save_checkpoint

    _, run, _ = trained_run
    best = tmp_path / "best.pt"
    best.write_bytes((run / "best.pt").read_bytes())
    before = best.read_bytes()
    model, meta = load_model(best)
    monkeypatch.setattr(scenetag.io.os, "replace", _no_space)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(best, model, meta | {"thresholds": [0.1] * 5})
    assert best.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # the temp file is gone too


def _denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied", str(args[1]) if len(args) > 1 else None)


@pytest.mark.parametrize("fail, message", [(_no_space, "No space left on device"), (_denied, "Permission denied")])
def test_cli_write_failure_is_a_clear_error(trained_run, tmp_path, monkeypatch, capsys, fail, message):
    import scenetag.io
    from scenetag.cli import main

    _, run, _ = trained_run
    monkeypatch.setattr(scenetag.io.os, "replace", fail)
    assert main(["export", "--model", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert message in err and "m.onnx" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())

from __future__ import annotations

import subprocess
import sys

from scenetag.cli import main


def test_synth_then_explore(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "-n", "30"]) == 0
    assert main(["explore", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "all 30 images decode" in out and "30 images, 5 classes" in out
    assert (tmp_path / "r" / "report.html").is_file()


def test_bad_data_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "original").mkdir()
    (tmp_path / "labels.json").write_text("[1, -1]\n")
    assert main(["explore", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no images found" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_check_lists_every_bad_file(synth_dir, tmp_path, capsys):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(synth_dir, root)
    (root / "original" / "3.jpg").write_bytes(b"")
    (root / "original" / "7.jpg").write_text("txt")
    assert main(["explore", "--data", str(root), "--out", str(tmp_path / "r"), "--check"]) == 2
    err = capsys.readouterr().err
    assert "2 bad image file(s)" in err and "3.jpg" in err and "7.jpg" in err


def test_bad_config_rejected_before_work(synth_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "--set", "train.phases.0.lr=-1"]) == 2
    assert "lr must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "--backbone", "resnet18"]) == 2
    assert "--weights none" in capsys.readouterr().err


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "scenetag", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "scenetag" in r.stdout


def test_run_command_explores_trains_evaluates_then_reuses(synth_dir, tmp_path, capsys):
    args = ["run", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "-q",
            "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none", "--set", "model.image_size=48",
            "--set", "train.views=[orig, flip]", "--set", "train.batch_size=8", "--set", "train.lr_find_steps=12",
            "--set", "train.phases=[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.003, lr_mult: 1.0}]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "60 images, 5 classes" in out and "samples_f1" in out
    for f in ["explore/report.html", "best.pt", "evaluation/report.html", "evaluation/metrics.json"]:
        assert (tmp_path / "r" / f).is_file(), f
    assert main(args) == 0
    assert "already holds a finished run" in capsys.readouterr().out

from __future__ import annotations

import json
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
    assert "60 images, 5 classes" in out and "samples_f1" in out and "held-out estimate" in out
    assert f"refit on all 60 labelled images" in out and "final.pt is the model to ship" in out
    from scenetag.data.label_issues import cleanlab_flags
    from scenetag.infer.outputs import read_label_columns, read_probabilities

    classes = ["desert", "mountains", "sea", "sunset", "trees"]
    given, _ = read_label_columns(tmp_path / "r" / "test_predictions.csv", classes)
    flagged = cleanlab_flags(given, read_probabilities(tmp_path / "r" / "test_predictions.csv", classes))
    suspects = json.loads((tmp_path / "r" / "run.json").read_text())["label_suspects_in_test"]
    assert suspects == {"pairs": int(flagged.sum()), "images": int(flagged.any(1).sum()), "test_images": len(given)}
    assert f"labels: {suspects['pairs']} (image, label) pair(s) of the {len(given)} test images are likely label errors" in out
    assert f"scenetag audit --data {synth_dir}" in out and "scenetag review --audit" in out and (tmp_path / "r" / "index.html").is_file()
    for f in ["explore/report.html", "best.pt", "evaluation/report.html", "evaluation/metrics.json", "run.json", "final.pt", "refit/best.pt"]:
        assert (tmp_path / "r" / f).is_file(), f
    first = json.loads((tmp_path / "r" / "run.json").read_text())
    evaluated = json.loads((tmp_path / "r" / "evaluation" / "metrics.json").read_text())
    assert not first["reused"] and first["seconds"]["total"] >= first["seconds"]["train"] > 0
    assert first["test"]["samples_f1"] == evaluated["samples_f1"] and first["test"]["n_images"] == evaluated["n_images"]
    assert first["final"]["n_images"] == 60 and first["final"]["path"].endswith("final.pt") and first["seconds"]["refit"] > 0
    assert main(["predict", "--model", str(tmp_path / "r"), str(synth_dir / "original" / "1.jpg"), "-q"]) == 0
    assert f"model: {tmp_path / 'r' / 'final.pt'}" in capsys.readouterr().err  # a run folder means the model it ships
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "already holds a finished run" in again and "(reused)" in again
    assert json.loads((tmp_path / "r" / "run.json").read_text())["reused"]
    # An interrupted run with other settings is refused, naming what differs.
    (tmp_path / "r" / "result.json").unlink()
    assert main(args[:-1] + ["train.phases=[{name: head, unfreeze: 0.0, epochs: 2, lr: 0.003, lr_mult: 1.0}]"]) == 2
    assert "an interrupted run with another config (train.phases.0.epochs differ)" in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_evaluate_without_images_is_a_usage_error(trained_run, tmp_path, capsys):
    _, run, _ = trained_run
    assert main(["evaluate", "--model", str(run / "best.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "--data" in _one_line_error(capsys) and not (tmp_path / "e").exists()


def test_cuda_requested_without_cuda_is_one_line(synth_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "--device", "cuda", "-q"]) == 2
    assert "CUDA is not available" in _one_line_error(capsys) and not (tmp_path / "r").exists()


def test_serve_fails_before_announcing(trained_run, tmp_path, capsys):
    import socket

    _, run, _ = trained_run
    (tmp_path / "junk.pt").write_bytes(b"")
    assert main(["serve", "--model", str(tmp_path / "junk.pt"), "--port", "0"]) == 2
    assert "junk.pt" in _one_line_error(capsys) and "serving" not in capsys.readouterr().out
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        assert main(["serve", "--model", str(run / "best.pt"), "--port", str(busy.getsockname()[1])]) == 2
        line = _one_line_error(capsys)
    finally:
        busy.close()
    assert "cannot listen on 127.0.0.1" in line


def test_resume_refuses_options_that_change_the_run(trained_run, tmp_path, capsys):
    import shutil

    _, run, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["train", "--resume", str(copy), "--set", "train.seed=5", "--set", "train.phases.1.epochs=9", "-q"]) == 2
    line = _one_line_error(capsys)
    assert "train.phases.1.epochs, train.seed" in line and "--resume" in line


def test_finished_run_with_another_config_names_the_keys(trained_run, capsys):
    from scenetag.errors import ConfigError
    from scenetag.train.recipe import train_or_resume

    cfg, run, _ = trained_run
    other = cfg.model_copy(deep=True)
    other.train.mixup = 0.1
    import pytest

    with pytest.raises(ConfigError, match="train.mixup differ"):
        train_or_resume(other, run, progress=False)


def test_old_option_spellings_still_work_with_a_warning(trained_run, synth_dir, tmp_path, capsys):
    _, run, _ = trained_run
    img = str(synth_dir / "original" / "1.jpg")
    assert main(["predict", "--model", str(run / "best.pt"), img, "--format", "json", "--output", str(tmp_path / "p.json"), "-q"]) == 0
    assert (tmp_path / "p.json").read_text().lstrip().startswith("[")
    assert "--format is deprecated here; use --output-format" in capsys.readouterr().err
    assert main(["explore", "--data", str(synth_dir), "--format", "miml", "--out", str(tmp_path / "x"), "--samples", "0"]) == 0
    assert "use --layout" in capsys.readouterr().err


def test_verbose_after_the_command_and_every_option_explained():
    from scenetag.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["explore", "-v"]).verbose and parser.parse_args(["-v", "explore"]).verbose
    assert not parser.parse_args(["explore"]).verbose
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest == "help" or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings}: no help text"
        assert "default: None" not in sub.format_help(), name


def test_numeric_options_out_of_range_are_usage_errors(capsys):
    import pytest

    for argv in (["serve", "--model", "m.onnx", "--port", "99999"], ["serve", "--model", "m.onnx", "--max-files", "0"],
                 ["predict", "--model", "m.onnx", "x.jpg", "--batch-size", "0"], ["train", "--seed", "-1"], ["synth", "d", "-n", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_interrupt_hint_only_when_there_is_something_to_resume(tmp_path):
    from scenetag.cli import _interrupted, build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--out", str(tmp_path / "r")])
    assert _interrupted(args) == "interrupted"  # nothing saved yet (caching, first LR finder)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"x")
    assert "continue with: scenetag train --resume" in _interrupted(args)
    assert _interrupted(parser.parse_args(["predict", "--model", "m.pt", "x.jpg"])) == "interrupted"


def test_max_pixels_is_honoured_wherever_images_are_decoded(trained_run, synth_dir, tmp_path, capsys):
    _, run, _ = trained_run  # synthetic images are 96 x 64 = 6,144 pixels
    assert main(["explore", "--data", str(synth_dir), "--out", str(tmp_path / "x"), "--check", "--max-pixels", "5000"]) == 2
    assert "60 bad image file(s)" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(run / "best.pt"), "--split", "test", "--out", str(tmp_path / "e"), "--max-pixels", "5000", "-q"]) == 2
    assert "over the limit of 5,000" in capsys.readouterr().err
    assert main(["predict", "--model", str(run / "best.pt"), str(synth_dir / "original" / "1.jpg"), "--max-pixels", "5000", "-q"]) == 3
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "t"), "-q", "--set", "data.max_pixels=5000",
                 "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none", "--set", "model.image_size=32"]) == 2  # fmt: skip
    assert "image(s) cannot be read" in capsys.readouterr().err
    from scenetag.workflows.evaluate import run_max_pixels

    assert run_max_pixels(run) == 89_478_485  # evaluate --split takes the run's own bound by default


def test_distill_command_trains_on_the_teachers_soft_targets(trained_run, synth_dir, tmp_path, capsys):
    import json

    _, teacher_run, _ = trained_run
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher_run / "best.pt"), "--teacher-weight", "0.7", "--data", str(synth_dir), "--out", str(out), "-q",
            "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none", "--set", "model.image_size=48",
            "--set", "train.views=[orig, flip]", "--set", "train.batch_size=8", "--set", "train.lr_find_steps=12",
            "--set", "train.phases=[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.003, lr_mult: 1.0}]"]  # fmt: skip
    assert main(args) == 0
    from scenetag.config import load_config

    cfg = load_config(out / "config.yaml")
    assert cfg.train.teacher == str((teacher_run / "best.pt").absolute()) and cfg.train.teacher_weight == 0.7
    assert list((out / "cache").glob("teacher-*.npy")) and json.loads((out / "result.json").read_text())["metrics"]["test"]
    assert main(args[:2] + [str(tmp_path / "missing.pt")] + args[3:7] + ["--out", str(tmp_path / "s2")] + args[9:]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err
    assert not list((tmp_path / "s2").glob("cache/*"))  # refused before any caching

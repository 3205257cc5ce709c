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
import torch

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


# --------------------------------------------------------------------------- data loss (hardening round 2)


def test_synth_refuses_a_folder_with_files(synth_dir, tmp_path, capsys):
    import shutil

    from scenetag.cli import main

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    before = (data / "labels.json").read_bytes()
    assert main(["synth", str(data), "-n", "3"]) == 2
    assert "not empty" in capsys.readouterr().err and (data / "labels.json").read_bytes() == before
    assert main(["synth", str(data / "new"), "-n", "3"]) == 0  # an empty or new folder is fine
    assert main(["synth", str(data), "-n", "3", "--force"]) == 0


def test_finished_run_without_last_pt_is_not_retrained(trained_run, tmp_path):
    import shutil

    from scenetag.errors import ConfigError

    cfg, run, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "last.pt").unlink()  # 47 MB, only needed to resume: a natural thing to delete
    best = (copy / "best.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train(cfg, copy, progress=False)
    assert (copy / "best.pt").read_bytes() == best


def test_a_second_training_into_the_same_folder_is_refused(synth_dir, tmp_path):
    from scenetag.errors import UsageError

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(UsageError, match=f"in use by another scenetag process \\(PID {holder.pid}\\)"):
            train(tiny_cfg(synth_dir), run, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and taken over (then released).
    from scenetag.runs import RunDir, locked

    with locked(RunDir(run)):
        assert (run / ".lock").read_text().strip() == str(os.getpid())
    assert not (run / ".lock").exists()


def test_a_run_remembers_its_data_and_notices_other_data(trained_run, tmp_path, monkeypatch):
    import shutil

    import yaml

    from scenetag.config import load_config, with_absolute_paths
    from scenetag.errors import DataError
    from scenetag.train.rundata import load_run_parts

    cfg, run, _ = trained_run
    assert Path(load_config(run / "config.yaml").data.path).is_absolute()
    monkeypatch.chdir(tmp_path)
    assert with_absolute_paths(load_config(None, ["data.path=data"])).data.path == str(tmp_path / "data")
    # Another folder at the run's data path (here: the same images, one label changed) is refused.
    data = tmp_path / "data"
    shutil.copytree(cfg.data.path, data)
    lines = (data / "labels.json").read_text().splitlines()
    lines[0] = lines[0].replace("-1", "1", 1) if "-1" in lines[0] else lines[0].replace("1", "-1", 1)
    (data / "labels.json").write_text("\n".join(lines) + "\n")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    saved["data"]["path"] = str(data)
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(DataError, match=f"{data}: not the data .* was trained on"):
        load_run_parts(copy)
    shutil.copy(Path(cfg.data.path) / "labels.json", data / "labels.json")
    assert len(load_run_parts(copy)["test"]) == len(load_run_parts(run)["test"])


# --------------------------------------------------------------------------- inputs and outputs (hardening round 2)


def test_float_tiff_is_scaled_not_black(tmp_path):
    import numpy as np
    from PIL import Image

    from scenetag.data.images import open_image

    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (16, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    rgb = np.asarray(open_image(tmp_path / "f.tif"))
    assert rgb.shape == (16, 32, 3) and rgb[:, 0].max() == 0 and rgb[:, -1].min() == 255 and 100 < rgb.mean() < 155


def test_unicode_digit_names_and_tiny_data_sets_are_one_line(tmp_path, capsys):
    from PIL import Image

    from scenetag.cli import main

    data = tmp_path / "d"
    (data / "original").mkdir(parents=True)
    for name in ("1.jpg", "².jpg"):
        Image.new("RGB", (8, 8)).save(data / "original" / name)
    (data / "labels.json").write_text("[1, -1, -1, -1, -1]\n[-1, 1, -1, -1, -1]\n")
    assert main(["explore", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "².jpg is not a number" in err and "Traceback" not in err
    (data / "original" / "².jpg").rename(data / "original" / "2.jpg")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "-q", "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none"]) == 2
    err = capsys.readouterr().err
    assert "too few for a split" in err and "Traceback" not in err and not (tmp_path / "r").exists()


def test_every_unreadable_training_image_is_named_before_training(synth_dir, tmp_path, capsys):
    import shutil

    from scenetag.cli import main

    data = tmp_path / "d"
    shutil.copytree(synth_dir, data)
    (data / "original" / "5.jpg").write_bytes(b"")
    (data / "original" / "9.jpg").write_text("not an image")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "-q", "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none",
            "--set", "model.image_size=32", "--set", "data.val=0", "--set", "data.test=0", "--set", "train.views=[orig]"]  # fmt: skip
    assert main(args) == 2
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "2 image(s) cannot be read" in line[0] and "5.jpg" in line[0] and "9.jpg" in line[0]
    assert not (tmp_path / "r" / "best.pt").exists()


def test_a_failing_checkpoint_write_is_one_line(trained_run, tmp_path, monkeypatch):
    from scenetag.checkpoint import load_model, save_checkpoint
    from scenetag.errors import CheckpointError

    _, run, _ = trained_run
    model, meta = load_model(run / "best.pt")

    def enforce_fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", enforce_fail)
    (tmp_path / "b.pt").write_bytes(b"previous")
    with pytest.raises(CheckpointError, match=r"b.pt: could not write the checkpoint .*disk full.*unchanged"):
        save_checkpoint(tmp_path / "b.pt", model, meta)
    assert (tmp_path / "b.pt").read_bytes() == b"previous"


def test_outputs_never_destroy_inputs(trained_run, tmp_path, capsys):
    import shutil

    from scenetag.cli import main

    _, run, _ = trained_run
    ckpt = tmp_path / "m.pt"
    shutil.copy(run / "best.pt", ckpt)
    before = ckpt.read_bytes()
    assert main(["export", "--model", str(ckpt), "--out", str(tmp_path / "m.json")]) == 2  # its sidecar would be m.json itself
    assert main(["export", "--model", str(ckpt), "--out", str(ckpt)]) == 2
    assert main(["ensemble", str(ckpt), str(run / "best.pt"), "--out", str(ckpt), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("would overwrite") == 3 and ckpt.read_bytes() == before and not (tmp_path / "m.json").exists()


def test_prediction_output_through_links_to_stdout_never_onto_fifos(trained_run, synth_dir, tmp_path, capsys):
    from scenetag.cli import main

    _, run, _ = trained_run
    img = str(synth_dir / "original" / "1.jpg")
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    (tmp_path / "link.csv").symlink_to(target)
    assert main(["predict", "--model", str(run / "best.pt"), img, "--output", str(tmp_path / "link.csv"), "-q"]) == 0
    assert (tmp_path / "link.csv").is_symlink() and target.read_text().startswith("path,labels,")
    capsys.readouterr()
    assert main(["predict", "--model", str(run / "best.pt"), img, "--output", "-", "--output-format", "json", "-q"]) == 0
    assert '"path":' in capsys.readouterr().out
    os.mkfifo(tmp_path / "fifo.csv")
    assert main(["predict", "--model", str(run / "best.pt"), img, "--output", str(tmp_path / "fifo.csv"), "-q"]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_odd_input_paths(trained_run, synth_dir, tmp_path, capsys):
    import shutil

    from scenetag.infer.predictor import Predictor, expand_paths

    _, run, _ = trained_run
    shutil.copy(synth_dir / "original" / "1.jpg", tmp_path / "photo [1].jpg")
    shutil.copy(synth_dir / "original" / "2.jpg", tmp_path / "a.jpg")
    assert expand_paths([str(tmp_path / "photo [1].jpg")]) == [tmp_path / "photo [1].jpg"]  # an existing name is never a pattern
    assert expand_paths([str(tmp_path / "[a].jpg")]) == [tmp_path / "a.jpg"]  # a pattern when no such file exists
    os.mkfifo(tmp_path / "pipe.jpg")
    results = Predictor(run / "best.pt", num_workers=0).predict([tmp_path / "pipe.jpg", Path("/dev/zero"), tmp_path / "photo [1].jpg"])
    assert "not a regular file" in results[0].error and "not a regular file" in results[1].error and results[2].error is None


@pytest.mark.parametrize("extra, needle", [
    (["--set", "train.threads=-1"], "train.threads must be >= 0"),
    (["--set", "model.image_size=100000"], "model.image_size must be <= 1024"),
    (["--seed", "5000000000"], "must be in [0, 4294967295]"),
    (["--config", "BINARY"], "not a valid YAML text file"),
])  # fmt: skip
def test_bad_settings_are_one_line_before_any_work(synth_dir, tmp_path, capsys, extra, needle):
    from scenetag.cli import main

    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    extra = [str(tmp_path / "bin.yaml") if e == "BINARY" else e for e in extra]
    try:
        code = main(["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "-q"] + extra)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err and not (tmp_path / "r").exists()


def test_binary_classes_file_is_one_line(synth_dir, tmp_path):
    import shutil

    from scenetag.data import load_dataset
    from scenetag.errors import DataError

    data = tmp_path / "d"
    shutil.copytree(synth_dir, data)
    (data / "classes.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="classes.txt: cannot read the class names as UTF-8 text"):
        load_dataset(data)


def test_broken_runs_cannot_be_resumed_or_evaluated_silently(trained_run, synth_dir, tmp_path, capsys):
    import shutil

    from scenetag.cli import main

    _, run, _ = trained_run
    for name, damage, needle in [
        ("split", lambda r: (r / "split.json").write_text("{not json"), "split.json: not a readable split file"),
        ("state", lambda r: torch.save({k: v for k, v in torch.load(r / "last.pt", weights_only=True).items() if k != "train_state"}, r / "last.pt"), "holds no training state"),
    ]:
        copy = tmp_path / name
        shutil.copytree(run, copy)
        (copy / "result.json").unlink()  # looks interrupted
        damage(copy)
        assert main(["train", "--resume", str(copy), "-q"]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    # A run trained without a test part has nothing to evaluate there.
    no_test = train(tiny_cfg(synth_dir, **{"data.test": 0.0, "train.lr_find": "false"}), tmp_path / "no_test", progress=False)
    assert "test" not in no_test["metrics"]
    assert main(["evaluate", "--model", str(tmp_path / "no_test" / "best.pt"), "--split", "test", "--out", str(tmp_path / "e")]) == 2
    assert "its test part is empty (the run was trained with data.test=0)" in capsys.readouterr().err

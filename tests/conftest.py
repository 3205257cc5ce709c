"""Shared fixtures: tiny synthetic data sets made in temp dirs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Two cores and tiny models: one intra-op thread per test process is faster and steadier.
torch.set_num_threads(1)

from scenetag.data.synth import make_synthetic

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "miml-scene"


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """60 synthetic scenes in the MIML layout (read-only by convention)."""
    return make_synthetic(tmp_path_factory.mktemp("synth"), n=60, seed=0)


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "labels.json").is_file():
        pytest.skip(f"real MIML data not present at {REAL_DATA}")
    return REAL_DATA.resolve()


def tiny_cfg(data, **extra):
    """A tiny random-init backbone at 48 px: the whole recipe runs in seconds."""
    from scenetag.config import load_config

    ov = [
        f"data.path={data}",
        "model.backbone=test_efficientnet",
        "model.weights=none",
        "model.image_size=48",
        "train.views=[orig, flip, crop]",
        "train.batch_size=8",
        "train.lr_find_steps=12",
        "train.phases=[{name: head, unfreeze: 0.0, epochs: 2, lr: 0.0, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 2, lr: 0.002, lr_mult: 10.0}]",
        "train.threads=1",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, ov)


@pytest.fixture(scope="session")
def trained_run(synth_dir, tmp_path_factory):
    """(config, run folder, result) of one tiny run of the whole recipe, shared by test modules."""
    from scenetag.train.recipe import train

    run = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg(synth_dir)
    return cfg, run, train(cfg, run, progress=False)


@pytest.fixture(scope="session")
def audited(synth_dir, tmp_path_factory):
    """(audit folder, summary) of `scenetag audit` on the synthetic set: a tiny 3-fold run, head phase only; margin ranking, every disputed pair."""
    from scenetag.workflows.audit import audit

    cfg = tiny_cfg(synth_dir, **{"train.phases": "[{name: head, unfreeze: 0.0, epochs: 2, lr: 0.003, lr_mult: 1.0}]", "train.lr_find": "false"})
    out = tmp_path_factory.mktemp("audit")
    return out, audit(cfg, out, k=3, progress=False, ranking="margin", min_score=0.0)


def start_server(args: list[str], ready_path: str = "health", command: list[str] | None = None):
    """A scenetag server (``command``: how to run scenetag, default this interpreter) in a subprocess on a free
    loopback port: (process, its URL ending in /) once ``ready_path`` answers; fails the test if it exits or hangs."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*(command or [sys.executable, "-m", "scenetag"]), *args, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + ready_path, timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(0.3)
    proc.kill()
    pytest.fail("server did not start in 60 s")

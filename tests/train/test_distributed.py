"""torchrun with 2 CPU processes (gloo): disjoint covering shards, identical weights, rank-0-only files."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from scenetag.train.distributed import DistInfo, gather_rows, pick_device, shard_of


def test_shards_are_disjoint_and_cover():
    parts = [shard_of(11, DistInfo(r, 3)) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    vals = np.arange(22, dtype=float).reshape(11, 2)
    assert np.array_equal(gather_rows(np.arange(11), vals, 11, DistInfo()), vals)


def test_device_auto_is_cpu_here_and_bad_request_fails():
    import torch

    if not torch.cuda.is_available():
        assert pick_device("auto") in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


@pytest.mark.slow
def test_torchrun_two_processes(synth_dir, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "scenetag", "train", "--data", str(synth_dir), "--out", str(run), "-q",
        "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none", "--set", "model.image_size=48",
        "--set", "train.views=[orig, flip]", "--set", "train.batch_size=8", "--set", "train.lr_find_steps=12",
        "--set", "train.phases=[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.0, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 1, lr: 0.002, lr_mult: 10.0}]",
    ]
    import os

    env = dict(os.environ, SCENETAG_LOG_ALL_RANKS="1")  # rank 1 reports its shard and weights too
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    shards = {int(m.group(1)): json.loads(m.group(2)) for m in re.finditer(r"rank (\d)/2 trains on \d+ images: (\[[^\]]*\])", log)}
    assert set(shards) == {0, 1}
    assert not set(shards[0]) & set(shards[1])
    split = json.loads((run / "split.json").read_text())
    assert sorted(shards[0] + shards[1]) == sorted(split["train"])
    digests = dict(re.findall(r"rank (\d)/2 final weights sha (\w+)", log))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    # Only rank 0 wrote: one set of run files, one cache.
    assert (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    assert len(list((run / "cache").glob("*.json"))) == 2
    assert len([l for l in (run / "metrics.csv").read_text().splitlines() if l]) == 3

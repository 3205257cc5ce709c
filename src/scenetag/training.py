"""The training engine: the reference recipe (head, then progressive unfreezing; LR finder,
one-cycle, discriminative LRs) run on cached activations so it takes minutes on a CPU.

Phase ``i`` trains ``pieces[k_i:]`` + head, where ``k_i`` is chosen so those pieces
hold about ``phase.unfreeze`` of the backbone's parameters. The frozen part's
output for every (image, view) is computed once (see :mod:`scenetag.cache`).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .cache import ActivationCache, build_cache
from .checkpoint import FORMAT_VERSION, read_checkpoint, save_checkpoint
from .config import Config, ConfigError, config_to_yaml, load_config
from .data import MultiLabelDataset, Split, load_dataset, split_dataset
from .distributed import DistInfo, GradSync, average_buffers, barrier, broadcast, gather_rows, init_distributed, pick_device, shard_of
from .evaluation import apply_temperatures, fit_temperatures, multilabel_metrics, tune_thresholds
from .io import atomic_write_json, atomic_write_text
from .lr_find import lr_find, plot_lr_find
from .models import MultiLabelNet, build_model, model_preprocessing
from .transforms import Preprocessing
from .visualisation import plot_training_curves

log = logging.getLogger(__name__)
EVAL_VIEWS = ["orig", "flip"]
_TEST_EPOCH_SLEEP = float(os.environ.get("SCENETAG_TEST_EPOCH_SLEEP", "0") or 0)
METRIC_FIELDS = ["phase", "epoch", "lr", "train_loss", "val_loss", "val_samples_f1", "val_micro_f1", "val_mAP", "seconds"]


# --------------------------------------------------------------------------- losses


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al. 2021): focusing on hard negatives, clipping easy ones. Mean over elements."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        p_neg = (1 - p + self.clip).clamp(max=1) if self.clip > 0 else 1 - p
        loss = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        pt = p * y + p_neg * (1 - y)
        gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
        return -(loss * (1 - pt).pow(gamma)).mean()


class SmoothedBCE(nn.Module):
    """``BCEWithLogitsLoss`` with optional label smoothing and ``pos_weight``."""

    def __init__(self, smoothing: float = 0.0, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.smoothing = smoothing
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.smoothing:
            y = y * (1 - self.smoothing) + self.smoothing / 2
        return self.bce(logits, y)


def make_loss(cfg: Config, labels: np.ndarray) -> nn.Module:
    """The configured loss; ``pos_weight`` = negatives/positives per class from the training labels."""
    t = cfg.train
    if t.loss == "asl":
        return AsymmetricLoss(t.asl_gamma_neg, t.asl_gamma_pos, t.asl_clip)
    pos_weight = None
    if t.pos_weight:
        pos = labels.sum(0).clip(min=1)
        pos_weight = torch.tensor((len(labels) - pos) / pos, dtype=torch.float32)
    return SmoothedBCE(t.label_smoothing, pos_weight)


# --------------------------------------------------------------------------- optimisation


def discriminative_groups(model: MultiLabelNet, k: int, lr: float, lr_mult: float, n_groups: int = 3) -> list[dict]:
    """Param groups for pieces[k:] (split into up to ``n_groups``) + head; LRs rise geometrically to ``lr``."""
    pieces = [m for _, m in model.pieces()[k:]]
    chunks = [c for c in np.array_split(np.arange(len(pieces)), min(n_groups, len(pieces))) if len(c)] if pieces else []
    groups = [{"params": [p for i in c for p in pieces[i].parameters()]} for c in chunks]
    groups.append({"params": list(model.head.parameters())})
    n = len(groups)
    for i, g in enumerate(groups):
        g["lr"] = lr / lr_mult ** ((n - 1 - i) / max(n - 1, 1)) if n > 1 else lr
    return groups


def make_optimizer(groups: list[dict], cfg: Config) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=groups[-1]["lr"], weight_decay=cfg.train.weight_decay, betas=(0.9, 0.99))


def one_cycle(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle policy: LR warms up then anneals; Adam's beta1 moves the opposite way."""
    total_steps = max(total_steps, 1)
    # torch divides by zero when pct_start * total_steps == 1 (a 4-step phase on a tiny data set).
    pct = 0.3 if total_steps == 4 else 0.25
    return torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=total_steps,
        pct_start=pct,
        div_factor=25.0,
        final_div_factor=1e4,
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )


# --------------------------------------------------------------------------- data from caches


def epoch_batches(cache: ActivationCache, tap: int, rows: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch: every training image once, each with one of its cached views at random."""
    order = rng.permutation(len(rows))
    views = rng.integers(0, len(cache.kinds), size=len(rows))
    for s in range(0, len(order), batch_size):
        b = order[s : s + batch_size]
        if len(b) < 2:  # BatchNorm cannot train on a batch of one
            continue
        yield cache.get(tap, rows[b], views[b]), torch.from_numpy(y[b]).float()


def endless_batches(cache: ActivationCache, tap: int, rows: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    while True:
        yield from epoch_batches(cache, tap, rows, y, batch_size, rng)


def to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    """Move a batch, feature maps in channels_last (what the model's convolutions expect)."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def autocast_ctx(amp: str, device: str):
    """Mixed precision on GPU (``bf16``/``fp16``); full precision on CPU, where it does not pay here."""
    if not amp or device == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup on cached activations (manifold mixup): blend pairs of inputs and their label vectors."""
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1 - lam)  # keep the first sample dominant
    perm = torch.from_numpy(rng.permutation(len(x)))
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


@torch.no_grad()
def predict_cached(model: MultiLabelNet, cache: ActivationCache, tap: int, rows: np.ndarray, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """Probabilities averaged over the cached views (test-time augmentation), shape (n, classes)."""
    was = model.training
    model.eval()
    probs = np.zeros((len(rows), model.n_classes), dtype=np.float64)
    for v in range(len(cache.kinds)):
        for s in range(0, len(rows), batch_size):
            x = to_device(cache.get(tap, rows[s : s + batch_size], v), device)
            probs[s : s + batch_size] += torch.sigmoid(model.forward_from(tap, x)).double().cpu().numpy()
    model.train(was)
    return probs / len(cache.kinds)


# --------------------------------------------------------------------------- run folder


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int) -> int:
    # Under torchrun the local processes share the cores.
    n = n or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    return n


def versions() -> dict[str, str]:
    import sklearn
    import timm
    import torchvision

    return {
        "scenetag": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def write_metrics_csv(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in METRIC_FIELDS})
    return atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- the run


@dataclass
class Prepared:
    """Everything a run needs before the first phase: data, split, model, caches."""

    cfg: Config
    ds: MultiLabelDataset
    split: Split
    model: MultiLabelNet
    pp: Preprocessing
    taps: list[int]
    train_cache: ActivationCache
    eval_cache: ActivationCache
    train_rows: np.ndarray  # rows of train_cache this rank trains on
    y_train: np.ndarray  # their labels
    eval_rows_val: np.ndarray  # rows of eval_cache holding (this rank's part of) split.val
    eval_rows_test: np.ndarray
    order_val: np.ndarray  # positions of those rows within split.val
    order_test: np.ndarray
    dist: DistInfo
    device: str
    grad_sync: GradSync


def phase_boundaries(model: MultiLabelNet, cfg: Config) -> list[int]:
    """The piece index each phase trains from (len(pieces) = head only, on pooled features)."""
    n = len(model.pieces())
    if not cfg.train.cache:
        return [0] * len(cfg.train.phases)
    return [n if p.unfreeze == 0 else model.boundary_for_fraction(p.unfreeze) for p in cfg.train.phases]


def model_identity(cfg: Config) -> dict[str, Any]:
    w = cfg.model.weights
    if w not in ("default", "none") and Path(w).is_file():
        st = Path(w).stat()
        w = f"{Path(w).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return {"backbone": cfg.model.backbone, "weights": w}


def prepare(cfg: Config, run_dir: Path, progress: bool = True, ds: MultiLabelDataset | None = None, split: Split | None = None, whole: bool = False) -> Prepared:
    """Load data, split, build the pretrained model and compute every activation cache once.

    ``whole`` caches every image (not just each split's part), so the K folds of a
    cross-validation share one cache in a shared ``train.cache_dir``.
    """
    set_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    if info.enabled and whole:
        raise ConfigError("cross-validation (--cv) is not supported under torchrun; run the folds as separate jobs")
    ds = ds or load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    # Identical on every rank: same data, same seed.
    split = split or split_dataset(ds.labels, cfg.data.val, cfg.data.test, cfg.train.seed)
    model = build_model(cfg.model.backbone, cfg.model.weights, len(ds.classes), cfg.model.head, cfg.model.dropout)
    pp = model_preprocessing(model, cfg.model.image_size)
    taps = sorted(set(phase_boundaries(model, cfg)))
    mid = model_identity(cfg)
    model.freeze_bn = cfg.train.freeze_bn
    cache_dir = Path(cfg.train.cache_dir) if cfg.train.cache_dir else run_dir / "cache"
    if not info.is_main:
        cache_dir = None  # other ranks keep their shard's cache in memory: only rank 0 writes files
    t = cfg.train
    common = dict(taps=taps, pp=pp, seed=t.seed, cache_dir=cache_dir, batch_size=t.batch_size, engine=t.engine, device=device, dtype=t.cache_dtype, in_memory_gb=t.cache_in_memory_gb, max_pixels=cfg.data.max_pixels, progress=progress and info.is_main)
    if whole:
        train_ids = held = np.arange(len(ds))
        rows_train, y_train = split.train, ds.labels[split.train]
        rows_val, rows_test = split.val, split.test
        order_val, order_test = np.arange(len(split.val)), np.arange(len(split.test))
    else:
        train_ids = split.train[shard_of(len(split.train), info)]
        rows_train, y_train = np.arange(len(train_ids)), ds.labels[train_ids]
        held_all = np.concatenate([split.val, split.test])
        pos = shard_of(len(held_all), info)
        held = held_all[pos]
        rows_val, rows_test = np.flatnonzero(pos < len(split.val)), np.flatnonzero(pos >= len(split.val))
        order_val, order_test = pos[rows_val], pos[rows_test] - len(split.val)
    if info.enabled:
        shown = json.dumps(sorted(int(i) for i in train_ids)) if len(train_ids) <= 200 else f"sha {hashlib.sha256(np.sort(train_ids).tobytes()).hexdigest()[:12]}"
        log.info("rank %d/%d trains on %d images: %s", info.rank, info.world, len(train_ids), shown)
    log.info("caching %d training images x %d views at pieces %s", len(train_ids), len(t.views), taps)
    train_cache = build_cache(model, mid, ds.subset(train_ids), t.views, ids=train_ids, **common)
    eval_views = EVAL_VIEWS if t.tta else ["orig"]
    eval_cache = build_cache(model, mid, ds.subset(held), eval_views, ids=held, **common)
    # channels_last: about 1.5x faster convolutions on this CPU, for training and evaluation alike.
    model.to(device=device, memory_format=torch.channels_last)
    return Prepared(cfg, ds, split, model, pp, taps, train_cache, eval_cache, rows_train, y_train, rows_val, rows_test, order_val, order_test, info, device, GradSync(model, info))


def predict_split(p: Prepared, k: int, which: str) -> np.ndarray:
    """TTA probabilities for all of split.val or split.test, gathered from every rank."""
    rows, order = (p.eval_rows_val, p.order_val) if which == "val" else (p.eval_rows_test, p.order_test)
    n = len(p.split.val) if which == "val" else len(p.split.test)
    local = predict_cached(p.model, p.eval_cache, k, rows, device=p.device)
    return gather_rows(order, local, n, p.dist)


def checkpoint_meta(p: Prepared, boundary: int, thresholds: np.ndarray, metrics: dict) -> dict[str, Any]:
    """What a checkpoint says about itself (plain types only, for weights_only loading)."""
    return {
        "classes": list(p.ds.classes),
        "backbone": p.cfg.model.backbone,
        "head": p.cfg.model.head,
        "dropout": p.cfg.model.dropout,
        "preprocessing": p.pp.to_dict(),
        "thresholds": [float(x) for x in thresholds],
        "fallback": True,
        "boundary": int(boundary),
        "config": p.cfg.to_dict(),
        "metrics": json.loads(json.dumps(metrics, default=float)),
        "format_version": FORMAT_VERSION,
        "scenetag_version": __version__,
    }


def _epoch_seed(seed: int, phase: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, phase, epoch + 1000]).generate_state(1)[0])


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def run_phase(p: Prepared, pi: int, k: int, run_dir: Path, state: dict[str, Any], loss_fn: nn.Module, progress: bool) -> None:
    """Train phase ``pi`` from piece ``k`` (LR finder -> one-cycle), checkpointing every epoch."""
    cfg, model = p.cfg, p.model
    phase = cfg.train.phases[pi]
    t = cfg.train
    model.freeze_until(k)
    y_train, rows = p.y_train, p.train_rows
    resuming = state.get("phase") == pi and state.get("epoch", 0) > 0
    lr = phase.lr
    if resuming:
        lr = state["lr"]
    elif t.lr_find or not lr:
        # With a fixed phase LR the sweep still runs (plot + suggestion in the run folder);
        # it restores every state it touched, so training is unchanged by it.
        lr = find_lr(p, pi, k, loss_fn, run_dir, fixed=lr)
    groups = discriminative_groups(model, k, lr, phase.lr_mult)
    opt = make_optimizer(groups, cfg)
    steps_per_epoch = sum(1 for s in range(0, len(rows), t.batch_size) if len(rows[s : s + t.batch_size]) >= 2)
    if p.dist.enabled:  # every rank must take the same number of synchronised steps
        steps = torch.tensor(steps_per_epoch)
        torch.distributed.all_reduce(steps, op=torch.distributed.ReduceOp.MIN)
        steps_per_epoch = int(steps)
    sched = one_cycle(opt, steps_per_epoch * phase.epochs)
    start = 0
    if resuming:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["epoch"]
    y_val = p.ds.labels[p.split.val]
    scaler = torch.amp.GradScaler(enabled=t.amp == "fp16" and p.device.startswith("cuda"))
    for epoch in range(start, phase.epochs):
        t0 = time.time()
        es = _epoch_seed(t.seed, pi, epoch)
        torch.manual_seed(es)
        rng = np.random.default_rng([es, p.dist.rank] if p.dist.enabled else es)
        model.train()
        total, n = 0.0, 0
        batches = itertools.islice(epoch_batches(p.train_cache, k, rows, y_train, t.batch_size, rng), steps_per_epoch)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"{phase.name} {epoch + 1}/{phase.epochs}", leave=False, disable=not progress or not p.dist.is_main)
        for x, y in bar:
            x, y = to_device(x, p.device), y.to(p.device)
            if t.mixup > 0:
                x, y = mixup(x, y, t.mixup, rng)
            opt.zero_grad(set_to_none=True)
            with autocast_ctx(t.amp, p.device):
                loss = loss_fn(model.forward_from(k, x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        average_buffers(model, p.dist)
        probs = predict_split(p, k, "val")
        m = multilabel_metrics(y_val, probs, 0.5, p.ds.classes) if len(y_val) else {}
        row = {
            "phase": phase.name,
            "epoch": epoch + 1,
            "lr": round(lr, 8),
            "train_loss": round(total / max(n, 1), 5),
            "val_loss": round(m.get("bce_loss", float("nan")), 5),
            "val_samples_f1": round(m.get("samples_f1", float("nan")), 5),
            "val_micro_f1": round(m.get("micro_f1", float("nan")), 5),
            "val_mAP": round(m.get("mAP", float("nan")), 5),
            "seconds": round(time.time() - t0, 2),
        }
        state["history"].append(row)
        log.info(
            "%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val samples-F1 %.4f  micro-F1 %.4f  mAP %.4f  (%.1fs)",
            phase.name, epoch + 1, phase.epochs, row["train_loss"], row["val_loss"], row["val_samples_f1"], row["val_micro_f1"], row["val_mAP"], row["seconds"],
        )
        if not len(y_val):
            score = float(len(state["history"]))  # no val: the latest epoch (counted across phases) is best
        elif t.select == "loss":  # lower val BCE is better; thresholds are tuned afterwards anyway
            score = -m["bce_loss"]
        else:
            score = m["samples_f1"]
        if score > state["best_score"]:
            state["best_score"] = score
            state["best_boundary"] = k
            if p.dist.is_main:
                save_checkpoint(run_dir / "best.pt", model, checkpoint_meta(p, k, np.full(len(p.ds.classes), 0.5), {"val": m}))
        state.update(phase=pi, epoch=epoch + 1, lr=lr, optimizer=opt.state_dict(), scheduler=sched.state_dict())
        if p.dist.is_main:
            save_checkpoint(run_dir / "last.pt", model, checkpoint_meta(p, k, np.full(len(p.ds.classes), 0.5), {"val": m}), train_state=_train_state(state))
            write_metrics_csv(run_dir / "metrics.csv", state["history"])
        if _TEST_EPOCH_SLEEP:  # lets the SIGKILL test land inside a phase
            time.sleep(_TEST_EPOCH_SLEEP)


def _train_state(state: dict[str, Any]) -> dict[str, Any]:
    keys = ("phase", "epoch", "lr", "optimizer", "scheduler", "history", "best_score", "best_boundary", "lr_found")
    return {k: state[k] for k in keys if k in state} | {"rng": _rng_state()}


def find_lr(p: Prepared, pi: int, k: int, loss_fn: nn.Module, run_dir: Path, fixed: float = 0.0) -> float:
    """LR finder on the cached activations of phase ``pi``; saves the plot, returns the LR to use.

    ``fixed`` > 0: the phase's configured LR, used instead of the suggestion (both are recorded).
    """
    cfg, model = p.cfg, p.model
    phase = cfg.train.phases[pi]
    if not p.dist.is_main:  # rank 0 sweeps on its shard; the others take its answer
        return float(broadcast(None, p.dist))
    groups = discriminative_groups(model, k, 1e-3, phase.lr_mult)
    opt = make_optimizer(groups, cfg)
    batches = ((to_device(x, p.device), y.to(p.device)) for x, y in endless_batches(p.train_cache, k, p.train_rows, p.y_train, cfg.train.batch_size, _epoch_seed(cfg.train.seed, pi, -1)))
    torch.manual_seed(_epoch_seed(cfg.train.seed, pi, -2))
    p.grad_sync.active = False
    try:
        res = lr_find(model, opt, batches, loss_fn, forward=lambda x: model.forward_from(k, x), steps=cfg.train.lr_find_steps)
    finally:
        p.grad_sync.active = True
    # The valley can land on noise with tiny data: keep it in a sane band.
    lr = fixed if fixed > 0 else float(np.clip(res.suggestion, 1e-5, 3e-2))
    plot_lr_find(res, run_dir / f"lr_find_{pi + 1}_{phase.name}.png", f"LR finder, phase {pi + 1} ({phase.name})", chosen=lr)
    atomic_write_json(run_dir / f"lr_find_{pi + 1}_{phase.name}.json", res.to_dict() | {"used": lr, "fixed": fixed > 0})
    return float(broadcast(lr, p.dist))


def write_run_files(cfg: Config, run_dir: Path, split: Split) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    atomic_write_json(run_dir / "versions.json", versions() | {"seed": cfg.train.seed})
    atomic_write_text(run_dir / "seed", f"{cfg.train.seed}\n")
    atomic_write_json(run_dir / "split.json", split.as_dict())


def train(cfg: Config, run_dir: Path | str, resume: bool = False, progress: bool = True, split: Split | None = None, whole: bool = False) -> dict[str, Any]:
    """Run the configured recipe into ``run_dir``; returns the final test (or val) metrics.

    ``split`` overrides the seeded train/val/test split (cross-validation folds).
    """
    run_dir = Path(run_dir)
    state: dict[str, Any] = {"history": [], "best_score": -float("inf"), "phase": 0, "epoch": 0}
    if resume:
        cfg, state, split = _load_resume(run_dir)
    elif (run_dir / "last.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run (last.pt); use --resume {run_dir} or another --out")
    t_start = time.time()
    p = prepare(cfg, run_dir, progress, split=split, whole=whole)
    if not resume:
        if p.dist.is_main:
            write_run_files(cfg, run_dir, p.split)
    else:
        model_payload = read_checkpoint(run_dir / "last.pt")
        p.model.load_state_dict(model_payload["state_dict"])
    loss_fn = make_loss(cfg, p.ds.labels[p.split.train]).to(p.device)
    boundaries = phase_boundaries(p.model, cfg)
    for pi, k in enumerate(boundaries):
        if pi < state["phase"] or (pi == state["phase"] and state["epoch"] >= cfg.train.phases[pi].epochs and state["epoch"] > 0):
            continue
        if pi > state["phase"]:
            state.update(phase=pi, epoch=0)
        run_phase(p, pi, k, run_dir, state, loss_fn, progress)
    if state["history"] and p.dist.is_main:
        plot_training_curves(state["history"], run_dir / "curves.png")
    result = finalize(p, run_dir, state)
    result["train_seconds"] = round(time.time() - t_start, 1)
    if p.dist.enabled:
        log.info("rank %d/%d final weights sha %s", p.dist.rank, p.dist.world, weights_digest(p.model))
    if p.dist.is_main:
        atomic_write_json(run_dir / "result.json", result)
    return result


def weights_digest(model: nn.Module) -> str:
    """Hash of every parameter, to compare models across processes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_resume(run_dir: Path) -> tuple[Config, dict[str, Any], Split]:
    if not (run_dir / "last.pt").is_file():
        raise ConfigError(f"{run_dir}: nothing to resume (no last.pt)")
    cfg = load_config(run_dir / "config.yaml")
    payload = read_checkpoint(run_dir / "last.pt")
    state = dict(payload["train_state"])
    sp = json.loads((run_dir / "split.json").read_text())
    split = Split(*(np.asarray(sp[k], dtype=np.int64) for k in ("train", "val", "test")))
    log.info("resuming %s at phase %d epoch %d", run_dir, state["phase"] + 1, state["epoch"])
    return cfg, state, split


def finalize(p: Prepared, run_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Load the best weights, tune per-label thresholds on val, evaluate on test, rewrite best.pt."""
    barrier(p.dist)  # best.pt is complete before any rank reads it
    payload = read_checkpoint(run_dir / "best.pt")
    p.model.load_state_dict(payload["state_dict"])
    k = int(payload["meta"]["boundary"])
    y_val = p.ds.labels[p.split.val]
    probs_val = predict_split(p, k, "val")
    temps = None
    if p.cfg.train.calibrate and len(y_val):
        temps = fit_temperatures(y_val, probs_val)
        log.info("per-label temperatures fitted on val: %s", np.round(temps, 3).tolist())
        probs_val = apply_temperatures(probs_val, temps)
    thresholds = tune_thresholds(y_val, probs_val, p.cfg.train.threshold_mode) if len(y_val) else np.full(len(p.ds.classes), 0.5)
    metrics: dict[str, Any] = {"val": multilabel_metrics(y_val, probs_val, thresholds, p.ds.classes)} if len(y_val) else {}
    if len(p.split.test):
        y_test = p.ds.labels[p.split.test]
        probs_test = apply_temperatures(predict_split(p, k, "test"), temps)
        metrics["test"] = multilabel_metrics(y_test, probs_test, thresholds, p.ds.classes)
        if p.dist.is_main:
            _save_predictions(run_dir / "test_predictions.csv", p, p.split.test, y_test, probs_test, thresholds)
    if p.dist.is_main:
        meta = checkpoint_meta(p, k, thresholds, metrics)
        if temps is not None:
            meta["temperatures"] = [float(t) for t in temps]
        save_checkpoint(run_dir / "best.pt", p.model, meta)
        atomic_write_json(run_dir / "metrics.json", metrics)
    barrier(p.dist)
    return {"metrics": metrics, "thresholds": thresholds.tolist(), "best_boundary": k, "run_dir": str(run_dir)}


def _save_predictions(path: Path, p: Prepared, idx: np.ndarray, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> None:
    from .evaluation import apply_thresholds

    pred = apply_thresholds(probs, thresholds)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "true", "predicted"] + [f"p_{c}" for c in p.ds.classes])
    for i, row in enumerate(idx):
        true = " ".join(c for c, v in zip(p.ds.classes, y[i]) if v)
        pr = " ".join(c for c, v in zip(p.ds.classes, pred[i]) if v)
        w.writerow([str(p.ds.paths[row]), true, pr] + [f"{x:.5f}" for x in probs[i]])
    atomic_write_text(path, buf.getvalue())


def lr_find_only(cfg: Config, run_dir: Path | str, phase: int = 1, progress: bool = True) -> dict[str, Any]:
    """``scenetag lr-find``: the finder of one phase on its cached activations; returns the suggestion."""
    run_dir = Path(run_dir)
    if not 1 <= phase <= len(cfg.train.phases):
        raise ConfigError(f"--phase must be in 1..{len(cfg.train.phases)}")
    one = copy.deepcopy(cfg)
    one.train.phases = [cfg.train.phases[phase - 1]]
    p = prepare(one, run_dir, progress)
    k = phase_boundaries(p.model, one)[0]
    p.model.freeze_until(k)
    lr = find_lr(p, 0, k, make_loss(one, p.ds.labels[p.split.train]).to(p.device), run_dir)
    name = one.train.phases[0].name
    return {"lr": lr, "plot": str(run_dir / f"lr_find_1_{name}.png"), "data": str(run_dir / f"lr_find_1_{name}.json")}


def train_or_resume(cfg: Config, run_dir: Path | str, progress: bool = True) -> dict[str, Any]:
    """The main job: reuse a finished run with the same config, resume an interrupted one, else train."""
    run_dir = Path(run_dir)
    done = run_dir / "result.json"
    if done.is_file() and (run_dir / "config.yaml").is_file() and load_config(run_dir / "config.yaml") == cfg:
        log.info("%s already holds a finished run with this config; remove it to train again", run_dir)
        return json.loads(done.read_text()) | {"reused": True}
    if (run_dir / "last.pt").is_file() and not done.is_file():
        return train(None, run_dir, resume=True, progress=progress)
    if done.is_file():
        raise ConfigError(f"{run_dir} holds a finished run with another config; pass another --out or remove it")
    return train(cfg, run_dir, progress=progress)


CV_KEYS = ["samples_f1", "micro_f1", "macro_f1", "samples_precision", "micro_precision", "macro_precision", "samples_recall", "micro_recall", "macro_recall", "hamming_loss", "subset_accuracy", "mAP", "bce_loss"]


def cross_validate(cfg: Config, out: Path | str, k: int = 5, progress: bool = True) -> dict[str, Any]:
    """Stratified K-fold: each fold trains on K-1 parts (val carved out of them) and tests on the rest.

    All folds share one activation cache of every image. Returns mean and std of every
    test metric over folds (also ``cv.json``); a fold already finished is reused.
    """
    from .data import _stratified_holdout, kfold_indices

    out = Path(out)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    cfg = copy.deepcopy(cfg)
    if not cfg.train.cache_dir:
        cfg.train.cache_dir = str(out / "cache")
    folds = kfold_indices(ds.labels, k, cfg.train.seed)
    val_frac = cfg.data.val / max(1 - cfg.data.test, 1e-9)
    per_fold = []
    for i, (rest, held) in enumerate(folds):
        fold_dir = out / f"fold{i + 1}"
        if (fold_dir / "result.json").is_file():
            per_fold.append(json.loads((fold_dir / "result.json").read_text()))
            continue
        tr, va = _stratified_holdout(ds.labels[rest], val_frac, cfg.train.seed + i)
        split = Split(rest[tr], rest[va], held)
        if (fold_dir / "last.pt").exists():
            import shutil

            shutil.rmtree(fold_dir)  # an interrupted fold starts again (its cache is kept)
        log.info("fold %d/%d: %d train, %d val, %d test", i + 1, k, len(split.train), len(split.val), len(split.test))
        per_fold.append(train(cfg, fold_dir, progress=progress, split=split, whole=True))
    tests = [r["metrics"]["test"] for r in per_fold]
    summary = {
        "k": k,
        "folds": [{key: t[key] for key in CV_KEYS} for t in tests],
        "mean": {key: float(np.mean([t[key] for t in tests])) for key in CV_KEYS},
        "std": {key: float(np.std([t[key] for t in tests])) for key in CV_KEYS},
        "seconds": [r.get("train_seconds") for r in per_fold],
    }
    atomic_write_json(out / "cv.json", summary)
    return summary

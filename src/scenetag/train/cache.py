"""Activation caches: run the frozen part of the network once, train the rest many times.

One forward pass over every (image, view) records the activations at every
boundary the recipe will ever need (e.g. pooled features for the head phase,
the inputs of the top 60% and 80% of the backbone for the unfreezing phases).
That is valid because a piece is only ever trained *after* it is unfrozen, so
the pieces below a phase's boundary still hold their pretrained weights.

Forward-only work runs on ONNX Runtime by default on CPU (about 2x PyTorch
eager here), with PyTorch as the fallback engine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.dataset import MultiLabelDataset
from ..data.images import open_image
from ..errors import DataError
from ..data.preprocessing import Preprocessing
from ..data.transforms import image_seed, make_views
from ..io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


class Trunk(nn.Module):
    """pieces[:max(taps)] of a model, returning the activation entering each tap boundary.

    A tap equal to ``len(pieces)`` means what the head sees after the last piece: the pooled
    features, or the feature map itself for a spatial head.
    """

    def __init__(self, model: nn.Module, taps: Sequence[int]):
        super().__init__()
        self.taps = sorted(set(int(t) for t in taps))
        self.n_pieces = len(model.pieces())
        last = max(self.taps)
        self.pieces = nn.ModuleList([m for _, m in model.pieces()[: min(last, self.n_pieces)]])
        self.pool = model.head_input if last == self.n_pieces else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, piece in enumerate(self.pieces):
            if i in self.taps:
                outs.append(x)
            x = piece(x)
        if self.pool is not None:
            outs.append(self.pool(x))
        elif len(self.pieces) in self.taps:
            outs.append(x)
        return tuple(outs)


class TrunkRunner:
    """Runs a :class:`Trunk` with ONNX Runtime (CPU) or PyTorch."""

    def __init__(self, trunk: Trunk, engine: str = "auto", device: str = "cpu", sample: torch.Tensor | None = None):
        self.trunk = trunk.eval()
        self.device = device
        if engine == "auto":
            engine = "onnx" if device == "cpu" and len(trunk.pieces) else "torch"
        self.engine = engine
        if engine == "onnx":
            self._session = self._export(sample if sample is not None else torch.randn(2, 3, 64, 64))
        else:
            self.trunk.to(device=device, memory_format=torch.channels_last)

    def _export(self, sample: torch.Tensor):
        import tempfile

        import onnxruntime as ort

        n_out = len(self.trunk.taps)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = os.path.join(tmp, "trunk.onnx")
            torch.onnx.export(
                self.trunk,
                (sample[:2],),
                path,
                input_names=["x"],
                output_names=[f"a{i}" for i in range(n_out)],
                dynamic_axes={"x": {0: "n"}},
                dynamo=False,
                opset_version=17,
            )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.log_severity_level = 3
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> list[np.ndarray]:
        if self.engine == "onnx":
            return self._session.run(None, {"x": x.numpy()})
        with torch.inference_mode():
            outs = self.trunk(x.to(self.device).contiguous(memory_format=torch.channels_last))
        return [o.float().cpu().numpy() for o in outs]


class _ViewSet(torch.utils.data.Dataset):
    """Decodes each image once and returns all its views (the only decode of the run)."""

    def __init__(self, paths: Sequence[Path], kinds: list[str], pp: Preprocessing, seed: int, ids: Sequence[int], max_pixels: int | None):
        self.paths, self.kinds, self.pp, self.seed, self.ids, self.max_pixels = paths, kinds, pp, seed, ids, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str | None]:
        """All views of image ``i``; an unreadable image gives blank views and its error, so one pass names every bad file."""
        try:
            img = open_image(self.paths[i], max_pixels=self.max_pixels)
        except DataError as e:
            return torch.zeros(len(self.kinds), 3, self.pp.size, self.pp.size), str(e)
        return make_views(img, self.kinds, self.pp, image_seed(self.seed, int(self.ids[i]))), None


def _collate(items: list[tuple[torch.Tensor, str | None]]) -> tuple[torch.Tensor, list[str]]:
    return torch.cat([views for views, _ in items]), [err for _, err in items if err]


def unreadable(errors: list[str]) -> DataError:
    """One error naming every training image that cannot be read."""
    shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
    return DataError(f"{len(errors)} image(s) cannot be read (fix or remove them; `scenetag explore --check` lists them too): {shown}")


@dataclass
class ActivationCache:
    """``acts[tap]``: array (n_images, n_views, ...) of activations entering piece ``tap``."""

    acts: dict[int, np.ndarray]
    kinds: list[str]
    key: str

    def get(self, tap: int, images: np.ndarray, views: np.ndarray | int) -> torch.Tensor:
        """float32 batch for the given image rows and view index(es)."""
        a = self.acts[tap][images, views]
        return torch.from_numpy(np.ascontiguousarray(a)).float()


def cache_key(model_id: dict, taps: Sequence[int], pp: Preprocessing, kinds: list[str], seed: int, paths: Sequence[Path], dtype: str) -> str:
    """Everything that changes the cached numbers, hashed: a stale cache is never reused."""
    files = [(str(p), os.stat(p).st_size, int(os.stat(p).st_mtime)) for p in paths]
    blob = json.dumps(
        {"v": CACHE_FORMAT, "model": model_id, "taps": sorted(taps), "pp": pp.to_dict(), "views": kinds, "seed": seed, "files": files, "dtype": dtype},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_cache(
    model: nn.Module,
    model_id: dict,
    ds: MultiLabelDataset,
    kinds: list[str],
    taps: Sequence[int],
    pp: Preprocessing,
    seed: int,
    cache_dir: Path | None,
    batch_size: int = 32,
    engine: str = "auto",
    device: str = "cpu",
    dtype: str = "float16",
    in_memory_gb: float = 4.0,
    max_pixels: int | None = None,
    progress: bool = True,
    ids: Sequence[int] | None = None,
) -> ActivationCache:
    """Compute (or reuse from ``cache_dir``) activations at ``taps`` for every image and view.

    ``ids`` are stable image ids for the per-image view seeds (default: row index).
    """
    ids = list(range(len(ds))) if ids is None else list(ids)
    key = cache_key(model_id, taps, pp, kinds, seed, ds.paths, dtype)
    if cache_dir is not None:
        found = _load_cache(cache_dir, key, in_memory_gb)
        if found is not None:
            log.info("reusing activation cache %s", key)
            return ActivationCache(found, kinds, key)
    loader = torch.utils.data.DataLoader(
        _ViewSet(ds.paths, kinds, pp, seed, ids, max_pixels),
        batch_size=max(1, batch_size // len(kinds)),
        num_workers=1,  # decoding overlaps with the forward pass on the other core
        collate_fn=_collate,
    )
    store = _Store(cache_dir, key, len(ds), len(kinds), np.dtype(dtype), in_memory_gb, len(set(taps)))
    t0 = time.time()
    engine_used = _fill(store, loader, Trunk(model, taps), engine, device, progress)
    elapsed = time.time() - t0
    log.info("cached %d images x %d views in %.1fs (%.1f views/s, engine %s)", len(ds), len(kinds), elapsed, len(ds) * len(kinds) / max(elapsed, 1e-9), engine_used)
    arrays = store.arrays if cache_dir is None else _commit_cache(cache_dir, key, store.arrays, store.tmp_files, in_memory_gb)
    return ActivationCache(arrays, kinds, key)


@dataclass
class _Store:
    """Where a cache pass writes: arrays in memory, or memory-mapped temp files when too large."""

    cache_dir: Path | None
    key: str
    n_images: int
    n_views: int
    dtype: np.dtype
    in_memory_gb: float
    n_taps: int
    arrays: dict = field(default_factory=dict)
    tmp_files: dict = field(default_factory=dict)
    row: int = 0

    def put(self, tap: int, out: np.ndarray) -> None:
        if tap not in self.arrays:
            shape = (self.n_images, self.n_views, *out.shape[2:])
            self.arrays[tap], self.tmp_files[tap] = _allocate(self.cache_dir, self.key, tap, shape, self.dtype, self.in_memory_gb, self.n_taps)
        self.arrays[tap][self.row : self.row + len(out)] = out

    def discard(self) -> None:
        for tmp in self.tmp_files.values():
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def _fill(store: _Store, loader, trunk: Trunk, engine: str, device: str, progress: bool) -> str:
    """One forward pass of the frozen trunk over every (image, view); returns the engine used.

    An unreadable image does not stop the pass: decoding goes on so one error names every bad file.
    """
    runner: TrunkRunner | None = None
    errors: list[str] = []
    for batch, bad in tqdm(loader, desc="caching activations", unit="batch", disable=not progress):
        errors += bad
        if errors:
            continue  # keep decoding to find every bad file, but compute nothing more
        runner = runner or TrunkRunner(trunk, engine, device, sample=batch)
        n_img = batch.shape[0] // store.n_views
        for tap, out in zip(trunk.taps, runner(batch)):
            store.put(tap, out.reshape(n_img, store.n_views, *out.shape[1:]))
        store.row += n_img
    if errors:
        store.discard()
        raise unreadable(errors)
    return runner.engine if runner else "-"


def _allocate(cache_dir, key, tap, shape, dtype, in_memory_gb, n_taps):
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if cache_dir is None or nbytes * n_taps <= in_memory_gb * 2**30:
        return np.empty(shape, dtype=dtype), None
    # Too big for memory: write straight into a memory-mapped file under the run folder.
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}-{tap}.npy.tmp"
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape), tmp


def _commit_cache(cache_dir: Path, key: str, arrays: dict, tmp_files: dict, in_memory_gb: float) -> dict:
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "format": CACHE_FORMAT, "taps": {}}
    for tap, arr in arrays.items():
        final = cache_dir / f"{key}-{tap}.npy"
        if tmp_files.get(tap) is not None:
            arr.flush()
            os.replace(tmp_files[tap], final)
        else:
            with atomic_path(final) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        meta["taps"][str(tap)] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": final.stat().st_size}
    atomic_write_json(cache_dir / f"{key}.json", meta)
    found = _load_cache(cache_dir, key, in_memory_gb)
    assert found is not None
    return found


def _load_cache(cache_dir: Path, key: str, in_memory_gb: float) -> dict[int, np.ndarray] | None:
    """The cached arrays if complete and intact (size check), else None (and it gets rebuilt)."""
    meta_p = cache_dir / f"{key}.json"
    if not meta_p.is_file():
        return None
    try:
        meta = json.loads(meta_p.read_text())
        total = sum(v["bytes"] for v in meta["taps"].values())
        mmap = "r" if total > in_memory_gb * 2**30 else None
        out = {}
        for tap, info in meta["taps"].items():
            f = cache_dir / f"{key}-{tap}.npy"
            if f.stat().st_size != info["bytes"]:
                raise ValueError(f"{f}: size {f.stat().st_size} != {info['bytes']}")
            arr = np.load(f, mmap_mode=mmap)
            if list(arr.shape) != info["shape"]:
                raise ValueError(f"{f}: shape {arr.shape} != {info['shape']}")
            out[int(tap)] = arr
        return out
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        log.warning("activation cache %s is damaged (%s); rebuilding it", key, e)
        return None


class StackedCaches:
    """Several caches read as one: rows of ``parts[1]`` follow those of ``parts[0]``, and so on.

    A refit trains on every image: the evaluated run's training cache is reused as it
    is and only the images it held out are computed, instead of caching all again.
    """

    def __init__(self, parts: Sequence[ActivationCache]):
        kinds = {tuple(part.kinds) for part in parts}
        if len(kinds) != 1:
            raise ValueError(f"stacked caches must hold the same views, got {sorted(kinds)}")
        self.parts = list(parts)
        self.kinds = list(parts[0].kinds)
        self.key = "+".join(part.key for part in parts)
        self.starts = np.cumsum([0] + [_n_images(part) for part in parts])

    def get(self, tap: int, images: np.ndarray, views: np.ndarray | int) -> torch.Tensor:
        images = np.asarray(images)
        views = np.broadcast_to(np.asarray(views), images.shape)
        owner = np.searchsorted(self.starts, images, side="right") - 1
        out: torch.Tensor | None = None
        for k in np.unique(owner):
            sel = owner == k
            got = self.parts[k].get(tap, images[sel] - self.starts[k], views[sel])
            if out is None:
                out = torch.empty((len(images), *got.shape[1:]), dtype=got.dtype)
            out[torch.from_numpy(sel)] = got
        if out is None:
            raise ValueError("no rows asked of the stacked caches")
        return out


def _n_images(cache: ActivationCache) -> int:
    return next(iter(cache.acts.values())).shape[0] if cache.acts else 0

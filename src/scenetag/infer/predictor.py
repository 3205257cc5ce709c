"""Prediction on new images from a model file alone: ``Predictor(model).predict(images)``.

An exported ``.onnx`` model needs numpy, Pillow and onnxruntime only (the slim install);
a ``.pt`` checkpoint needs torch (the training extra), imported only then.
"""
from __future__ import annotations

import glob
import itertools
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.eval_views import eval_array
from ..data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTS, open_image, to_rgb
from ..data.preprocessing import BAG_KINDS, Preprocessing
from ..errors import CheckpointError, DataError, missing_extra
from ..metrics import apply_temperatures, apply_thresholds
from ..model_meta import meta_tta
from .onnx import INPUT
from .outputs import Prediction

log = logging.getLogger(__name__)


def expand_paths(items: Sequence[str | Path]) -> list[Path]:
    """Image files from files, folders (recursive) and glob patterns, in a stable order.

    An existing path is always a file or folder, never a pattern (``photo [1].jpg``).
    A path that does not exist is kept so it is reported as an error, not silently dropped.
    """
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
        elif p.exists() or p.is_symlink() or not any(ch in str(item) for ch in "*?["):
            out.append(p)
        else:
            out += sorted(Path(g) for g in glob.glob(str(item), recursive=True) if Path(g).is_file())
    return out


class _Decoded:
    """Item ``i`` -> (i, model input array, None) or (i, None, error message)."""

    def __init__(self, items: Sequence[str | Path | Image.Image], pp: Preprocessing, max_pixels: int | None, bag: Sequence[str] = ()):
        self.items, self.pp, self.max_pixels, self.bag = items, pp, max_pixels, bag

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        if isinstance(item, tuple):  # (name, image) from the service
            item = item[1]
        try:
            img = to_rgb(item) if isinstance(item, Image.Image) else open_image(item, self.max_pixels)
            return i, eval_array(img, self.pp, self.bag), None
        except DataError as e:
            return i, None, str(e)


def _prefetched(decoder: "_Decoded", batch_size: int, workers: int):
    """Yield decoded batches in order while the next ones decode in background threads.

    Pillow and torch release the GIL while decoding and resizing, so threads
    overlap decoding with inference without a process's start-up and copying.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    starts = iter(range(0, len(decoder), batch_size))
    decode = lambda s: [decoder[i] for i in range(s, min(s + batch_size, len(decoder)))]  # noqa: E731
    if workers <= 0:
        for s in starts:
            yield decode(s)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(decode, s) for s in itertools.islice(starts, workers + 1))
        while pending:
            batch = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(decode, nxt))
            yield batch


class Predictor:
    """Loads a checkpoint (``.pt``) or an exported ``.onnx`` model and tags images.

    Preprocessing, thresholds and class names come from the model file itself.
    """

    def __init__(self, model_path: str | Path, batch_size: int = 32, tta: bool | None = None, fallback: bool | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, num_workers: int = 2):
        self.path = Path(model_path)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.num_workers = num_workers
        if self.path.suffix == ".onnx":
            from .onnx import load_onnx

            self._session, meta = load_onnx(self.path)
            self._setup(None, meta, tta, fallback)
        else:
            try:
                from ..checkpoint import load_model
            except ModuleNotFoundError as e:
                raise missing_extra(e, f"{self.path}: a .pt model") from None

            self._session = None
            self._setup(*load_model(self.path), tta, fallback)

    @classmethod
    def from_model(cls, model, meta: dict, batch_size: int = 32, tta: bool | None = None, fallback: bool | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, num_workers: int = 2) -> "Predictor":
        """A predictor for a model in memory (``meta`` as a checkpoint stores it), e.g. before it is saved."""
        self = cls.__new__(cls)
        self.path = Path("<memory>")
        self.batch_size, self.max_pixels, self.num_workers = batch_size, max_pixels, num_workers
        self._session = None
        self._setup(model.eval(), meta, tta, fallback)
        return self

    def _setup(self, model, meta: dict, tta: bool | None, fallback: bool | None) -> None:
        """``model``: a torch module (None for an ONNX session)."""
        self.meta = meta
        if model is not None:
            import torch

            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self.classes: list[str] = list(meta["classes"])
        self.thresholds = np.asarray(meta["thresholds"], dtype=np.float64)
        temps = meta.get("temperatures")
        self.temperatures = np.asarray(temps, dtype=np.float64) if temps else None
        self.pp = Preprocessing.from_dict(meta["preprocessing"])
        self.bag: list[str] = list(meta.get("bag") or [])  # a bag model scores these views of each image together
        unknown = [kind for kind in self.bag if kind not in BAG_KINDS]
        if unknown:
            raise CheckpointError(f"{self.path}: its bag names views {unknown} this version cannot make (known: {list(BAG_KINDS)})")
        self.tta = meta_tta(meta) if tta is None else tta
        self.fallback = meta.get("fallback", True) if fallback is None else fallback

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Sigmoid outputs for a preprocessed float32 batch (averaged with the flipped batch when TTA is on).

        A bag model's batch is (images, views, 3, size, size); flipping every view is the mirrored bag.
        """
        views = [x, x[..., ::-1]] if self.tta else [x]
        total = np.zeros((len(x), len(self.classes)), dtype=np.float64)
        for v in views:
            total += self._run(np.ascontiguousarray(v, dtype=np.float32))
        return apply_temperatures(total / len(views), self.temperatures)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {INPUT: x})[0]
        import torch

        t = torch.from_numpy(x)
        with torch.inference_mode():
            return torch.sigmoid(self._model(t if self.bag else t.contiguous(memory_format=torch.channels_last))).double().numpy()

    def labels(self, probs: np.ndarray) -> list[list[str]]:
        """The labels each row of probabilities gets (thresholds, then the top label when none passes and fallback is on)."""
        return [[c for c, v in zip(self.classes, row) if v] for row in apply_thresholds(probs, self.thresholds, self.fallback)]

    def prepare(self, item: str | Path | Image.Image | tuple[str, Image.Image]) -> np.ndarray:
        """The model input for one image (DataError when it cannot be read)."""
        _, x, error = _Decoded([item], self.pp, self.max_pixels, self.bag)[0]
        if error is not None:
            raise DataError(error)
        return x

    def predict(self, images: Iterable[str | Path | Image.Image | tuple[str, Image.Image]], progress: bool = False) -> list[Prediction]:
        """Predictions in input order; unreadable files get ``error`` set instead of raising.

        Items are paths, PIL images, or ``(name, PIL image)`` pairs.
        """
        items = list(images)
        results = [Prediction(path=_item_name(it, i)) for i, it in enumerate(items)]
        decoder = _Decoded(items, self.pp, self.max_pixels, self.bag)
        bar = tqdm(total=len(items), desc="predicting", unit="img", disable=not progress or len(items) <= 8)
        for batch in _prefetched(decoder, self.batch_size, self.num_workers):
            good = [(i, t) for i, t, e in batch if e is None]
            for i, _, e in batch:
                if e is not None:
                    results[i].error = e
                    log.warning("skipped: %s", e)
            if good:
                probs = self.probabilities(np.stack([x for _, x in good]))
                for (i, _), row, labels in zip(good, probs, self.labels(probs)):
                    results[i].probabilities = {c: round(float(v), 6) for c, v in zip(self.classes, row)}
                    results[i].labels = labels
            bar.update(len(batch))
        bar.close()
        return results

    def dataset_probabilities(self, ds, progress: bool = False) -> np.ndarray:
        """(images, classes) probabilities of a labelled data set in its order; other classes or an unreadable image is a DataError."""
        if list(ds.classes) != self.classes:
            raise DataError(f"data classes {list(ds.classes)} differ from the model's {self.classes}")
        results = self.predict(ds.paths, progress=progress)
        bad = [r.error for r in results if r.error]
        if bad:
            raise DataError(f"{len(bad)} image(s) could not be read, e.g. {bad[0]}")
        return np.array([[r.probabilities[c] for c in self.classes] for r in results])


def _item_name(item, i: int) -> str:
    if isinstance(item, tuple):
        return str(item[0])
    if isinstance(item, Image.Image):
        return str(getattr(item, "filename", "") or f"<image {i}>")
    return str(item)


def shard(paths: Sequence[Path], spec: str) -> list[Path]:
    """``I/N`` (1-based): every N-th path starting at I, so N copies cover the list once."""
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise DataError(f"--shard must look like I/N (e.g. 2/8), got {spec!r}") from None
    if not 1 <= i <= n:
        raise DataError(f"--shard {spec}: need 1 <= I <= N")
    return list(paths[i - 1 :: n])

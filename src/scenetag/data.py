"""Multi-label image data sets: loading every supported layout, validation, splits.

Supported layouts (auto-detected, ``fmt`` overrides):

* ``miml``: ``original/<n>.jpg`` + ``labels.json`` (one ``[1, -1, ...]`` list per
  line, matched to the images in *numeric* order of their names);
* ``csv``: a table with an image column and one 0/1 column per class, or the
  ``filename,labels`` form with space/comma separated label names;
* ``mat``: the original MIML MATLAB file (``targets``: classes x images of +-1)
  beside the ``original/`` folder;
* any folder of images plus ``labels=FILE`` pointing at one of the above.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from struct import error as struct_error

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MIML_CLASSES = ("desert", "mountains", "sea", "sunset", "trees")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = ("auto", "miml", "csv", "mat")
DEFAULT_DATA = Path("../shared/data/miml-scene")
MIML_SOURCE_URL = "http://lamda.nju.edu.cn/data_MIMLimage.ashx"
# Pillow's default bomb limit (~89 Mpx) warns; we refuse above it instead.
DEFAULT_MAX_PIXELS = 89_478_485


class DataError(ValueError):
    """A user-facing problem with the data: the message names the file (and line)."""


@dataclass(frozen=True)
class MultiLabelDataset:
    """Image paths, class names and a 0/1 label matrix (n_images x n_classes)."""

    paths: tuple[Path, ...]
    classes: tuple[str, ...]
    labels: np.ndarray
    root: Path
    source: str = ""
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.paths), len(self.classes)):
            raise DataError(
                f"label matrix has shape {self.labels.shape}, expected "
                f"({len(self.paths)}, {len(self.classes)})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> "MultiLabelDataset":
        """A new data set holding only ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return MultiLabelDataset(
            paths=tuple(self.paths[i] for i in idx),
            classes=self.classes,
            labels=self.labels[idx],
            root=self.root,
            source=self.source,
        )

    def label_names(self, i: int) -> list[str]:
        """Names of the positive labels of image ``i``."""
        return [c for c, v in zip(self.classes, self.labels[i]) if v]


# --------------------------------------------------------------------------- images


def open_image(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file fully as RGB with EXIF orientation applied.

    Raises :class:`DataError` naming the file for anything that is not a
    readable image (empty, truncated, text, too large).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    return decode_image(data, str(path), max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes (from a file or an upload called ``name``) as RGB, EXIF applied."""
    import io

    if len(data) == 0:
        raise DataError(f"{name}: empty file (0 bytes), not an image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise DataError(
                    f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of "
                    f"{max_pixels:,} (possible decompression bomb; raise max_pixels to allow it)"
                )
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{name}: not a valid image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{name}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct_error) as e:
        raise DataError(f"{name}: not a valid image (corrupt or truncated: {e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode (L, LA, P, RGBA, CMYK, I;16, ...) to 8-bit RGB, forcing a full decode."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite on white: transparent pixels have arbitrary colour underneath.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        arr = (arr / (hi if hi > 255 else 255.0) * 255.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    im.load()
    return im.copy()


def check_images(ds: MultiLabelDataset, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[str]:
    """Decode every image; return one error message per bad file (empty list when all good)."""
    errors = []
    for p in ds.paths:
        try:
            open_image(p, max_pixels=max_pixels)
        except DataError as e:
            errors.append(str(e))
    return errors


# --------------------------------------------------------------------------- parsing


def _numeric_key(p: Path) -> tuple[int, int | str]:
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in numeric order of their names where numeric."""
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=_numeric_key)


def parse_label_value(value: object, where: str) -> int:
    """Map +-1 / 0 / 1 (ints, floats or strings) to 0/1; anything else is an error."""
    if isinstance(value, bool):
        raise DataError(f"{where}: label value {value!r} is not one of -1, 0, 1")
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: label value {value!r} is not one of -1, 0, 1") from None
    if f == 1:
        return 1
    if f in (0, -1):
        return 0
    raise DataError(f"{where}: label value {value!r} is not one of -1, 0, 1")


def parse_labels_json(path: Path, n_classes: int | None = None) -> np.ndarray:
    """Parse MIML ``labels.json``: one JSON list per line (a single JSON list of lists also works)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read labels file ({e})") from None
    stripped = text.strip()
    if not stripped:
        raise DataError(f"{path}: labels file is empty")
    rows: list[list[object]] = []
    whole = None
    if stripped.startswith("[["):
        try:
            whole = json.loads(stripped)
        except json.JSONDecodeError:
            whole = None
    if isinstance(whole, list):
        rows = whole
        linenos = list(range(1, len(rows) + 1))
        line_word = "row"
    else:
        linenos = []
        line_word = "line"
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {lineno}: not a JSON list ({e.msg})") from None
            if not isinstance(row, list):
                raise DataError(f"{path}, line {lineno}: expected a JSON list like [1, -1, ...], got {line.strip()[:40]!r}")
            rows.append(row)
            linenos.append(lineno)
    width = n_classes if n_classes is not None else len(rows[0])
    out = np.zeros((len(rows), width), dtype=np.uint8)
    for k, (row, lineno) in enumerate(zip(rows, linenos)):
        where = f"{path}, {line_word} {lineno}"
        if not isinstance(row, list):
            raise DataError(f"{where}: expected a list of labels")
        if len(row) != width:
            raise DataError(f"{where}: has {len(row)} labels, expected {width}")
        out[k] = [parse_label_value(v, where) for v in row]
    return out


def read_classes_file(path: Path) -> tuple[str, ...]:
    """Class names, one per line (or comma separated)."""
    names = [n.strip() for n in re.split(r"[\n,]", path.read_text(encoding="utf-8")) if n.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate class names")
    return tuple(names)


def _find_image_dir(root: Path) -> Path:
    for name in ("original", "images"):
        if (root / name).is_dir():
            return root / name
    return root


def _classes_for(root: Path, n: int) -> tuple[str, ...]:
    for name in ("classes.txt", "classes"):
        if (root / name).is_file():
            classes = read_classes_file(root / name)
            if len(classes) != n:
                raise DataError(f"{root / name}: lists {len(classes)} classes but the labels have {n}")
            return classes
    if n == len(MIML_CLASSES):
        return MIML_CLASSES
    return tuple(f"class_{i}" for i in range(n))


def load_miml(root: Path, labels: Path | None = None, image_dir: Path | None = None) -> MultiLabelDataset:
    """The MIML published layout: ``original/<n>.jpg`` + ``labels.json``."""
    labels = labels or root / "labels.json"
    image_dir = image_dir or _find_image_dir(root)
    if not labels.is_file():
        raise DataError(f"{labels}: labels file not found")
    y = parse_labels_json(labels)
    images = list_images(image_dir)
    _check_count(labels, len(y), image_dir, len(images))
    return MultiLabelDataset(tuple(images), _classes_for(root, y.shape[1]), y, root, source=f"miml:{labels}")


def _check_count(labels: Path, n_labels: int, image_dir: Path, n_images: int) -> None:
    if n_images == 0:
        raise DataError(f"{image_dir}: no images found (empty data set)")
    if n_labels != n_images:
        more = "more" if n_labels > n_images else "fewer"
        raise DataError(
            f"{labels}: has {n_labels} label lines but {image_dir} holds {n_images} images "
            f"({more} labels than images)"
        )


def load_mat(root: Path, mat: Path | None = None, image_dir: Path | None = None) -> MultiLabelDataset:
    """The original MIML MATLAB file: ``targets`` (classes x images, +-1) beside ``original/``."""
    from scipy.io import loadmat  # only this layout needs scipy.io

    mat = mat or next(iter(sorted(root.glob("*.mat"))), None)
    if mat is None or not mat.is_file():
        raise DataError(f"{root}: no .mat labels file found")
    try:
        content = loadmat(str(mat))
    except Exception as e:  # scipy raises many types for a bad file
        raise DataError(f"{mat}: not a readable MATLAB file ({e})") from None
    if "targets" not in content:
        raise DataError(f"{mat}: no 'targets' matrix (found {sorted(k for k in content if not k.startswith('__'))})")
    t = np.asarray(content["targets"])
    if t.ndim != 2:
        raise DataError(f"{mat}: 'targets' must be 2-D (classes x images), got shape {t.shape}")
    y = np.zeros(t.T.shape, dtype=np.uint8)
    for (i, j), v in np.ndenumerate(t.T):
        y[i, j] = parse_label_value(v, f"{mat}, targets[{j}, {i}]")
    image_dir = image_dir or _find_image_dir(root)
    images = list_images(image_dir)
    _check_count(mat, len(y), image_dir, len(images))
    return MultiLabelDataset(tuple(images), _classes_for(root, y.shape[1]), y, root, source=f"mat:{mat}")


_IMAGE_COLUMNS = ("image", "filename", "file", "path", "image_id", "img", "name", "id")
_LABELS_COLUMNS = ("labels", "tags", "label")


def load_csv(csv_path: Path, image_dir: Path | None = None, classes: Sequence[str] | None = None) -> MultiLabelDataset:
    """A CSV table: image column + one 0/1 column per class, or ``filename,labels``."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path}: cannot read CSV ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{csv_path}: no data rows (empty data set)")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    img_col = next((lower.index(c) for c in _IMAGE_COLUMNS if c in lower), 0)
    root = csv_path.parent
    image_dir = image_dir or _find_image_dir(root)
    label_col = next((lower.index(c) for c in _LABELS_COLUMNS if c in lower), None)
    names: list[str] = []
    y_rows: list[list[int]] = []
    if label_col is not None and len(header) == 2:
        tag_lists = []
        for lineno, r in enumerate(rows[1:], 2):
            if len(r) != 2:
                raise DataError(f"{csv_path}, line {lineno}: expected 2 columns, got {len(r)}")
            names.append(r[img_col].strip())
            tag_lists.append([t for t in re.split(r"[\s,;|]+", r[label_col].strip()) if t])
        cls = tuple(classes) if classes else tuple(sorted({t for ts in tag_lists for t in ts}))
        index = {c: i for i, c in enumerate(cls)}
        for lineno, ts in enumerate(tag_lists, 2):
            row = [0] * len(cls)
            for t in ts:
                if t not in index:
                    raise DataError(f"{csv_path}, line {lineno}: unknown class {t!r} (classes: {', '.join(cls)})")
                row[index[t]] = 1
            y_rows.append(row)
    else:
        class_cols = [i for i in range(len(header)) if i != img_col]
        cls = tuple(header[i] for i in class_cols)
        if not cls:
            raise DataError(f"{csv_path}: no class columns besides the image column {header[img_col]!r}")
        if classes:
            unknown = [c for c in cls if c not in classes]
            if unknown:
                raise DataError(f"{csv_path}: unknown class column(s) {unknown} (classes: {', '.join(classes)})")
        if len(set(cls)) != len(cls):
            raise DataError(f"{csv_path}: duplicate class columns in header {header}")
        for lineno, r in enumerate(rows[1:], 2):
            if len(r) != len(header):
                raise DataError(f"{csv_path}, line {lineno}: has {len(r)} columns, header has {len(header)}")
            names.append(r[img_col].strip())
            y_rows.append([parse_label_value(r[i].strip(), f"{csv_path}, line {lineno}, column {header[i]!r}") for i in class_cols])
    seen: dict[str, int] = {}
    for lineno, n in enumerate(names, 2):
        if n in seen:
            raise DataError(f"{csv_path}, line {lineno}: duplicate image {n!r} (first on line {seen[n]})")
        seen[n] = lineno
    paths = tuple(_resolve(image_dir, root, n) for n in names)
    missing = [(lineno, p) for lineno, p in enumerate(paths, 2) if not p.is_file()]
    if missing:
        shown = "; ".join(f"line {ln}: {p}" for ln, p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{csv_path}: {len(missing)} image file(s) missing: {shown}{more}")
    y = np.asarray(y_rows, dtype=np.uint8).reshape(len(paths), len(cls))
    return MultiLabelDataset(paths, cls, y, root, source=f"csv:{csv_path}")


def _resolve(image_dir: Path, root: Path, name: str) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    for base in (image_dir, root):
        if (base / p).is_file():
            return base / p
        if not p.suffix:
            for ext in (".jpg", ".png", ".jpeg"):
                if (base / (name + ext)).is_file():
                    return base / (name + ext)
    return image_dir / p


def detect_format(root: Path, labels: Path | None = None) -> str:
    """Guess the layout from the labels file or the folder's contents."""
    if labels is not None:
        suffix = labels.suffix.lower()
        return {".json": "miml", ".csv": "csv", ".mat": "mat"}.get(suffix, "csv" if suffix in (".txt", ".tsv") else "")
    if (root / "labels.json").is_file():
        return "miml"
    if any(root.glob("*.mat")):
        return "mat"
    if any(root.glob("*.csv")):
        return "csv"
    return ""


def load_dataset(
    data: Path | str,
    labels: Path | str | None = None,
    fmt: str = "auto",
    warn_empty_classes: bool = True,
) -> MultiLabelDataset:
    """Load a multi-label data set from any supported layout (see module docstring)."""
    root = Path(data).absolute()
    labels_p = Path(labels).absolute() if labels is not None else None
    if root.is_file() and labels_p is None:
        root, labels_p = root.parent, root
    if not root.exists():
        hint = ""
        if root.resolve() == DEFAULT_DATA.resolve() or root.name == "miml-scene":
            hint = (
                f". Put the MIML natural scene images there (original/<n>.jpg + labels.json; "
                f"source: {MIML_SOURCE_URL}) or try `scenetag synth DIR` for a synthetic set"
            )
        raise DataError(f"{root}: data folder not found{hint}")
    if labels_p is not None and not labels_p.is_file():
        raise DataError(f"{labels_p}: labels file not found")
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(root, labels_p)
        if not fmt:
            raise DataError(
                f"{root}: cannot tell the layout (no labels.json, .csv or .mat found); "
                f"pass --labels FILE and/or --format {{miml,csv,mat}}"
            )
    if fmt == "miml":
        ds = load_miml(root, labels_p)
    elif fmt == "mat":
        ds = load_mat(root, labels_p)
    else:
        csv_path = labels_p or next(iter(sorted(root.glob("*.csv"))))
        ds = load_csv(csv_path, image_dir=_find_image_dir(root))
    if warn_empty_classes:
        empty = [c for c, n in zip(ds.classes, ds.labels.sum(0)) if n == 0]
        if empty:
            msg = f"class(es) with no positive example: {', '.join(empty)}"
            log.warning(msg)
            ds = MultiLabelDataset(ds.paths, ds.classes, ds.labels, ds.root, ds.source, (msg,))
    return ds


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Indices of a train/val/test split into a data set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("train", "val", "test")}


def _stratified_holdout(y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Iterative stratification: (rest, held) with ``held`` about ``frac`` of the rows (none for ``frac`` 0)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if frac <= 0:
        return np.arange(len(y)), np.array([], dtype=np.int64)

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
    rest, held = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(rest), np.sort(held)


def split_dataset(labels: np.ndarray, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Split:
    """Reproducible multi-label stratified train/val/test split (fractions of the whole)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions val={val}, test={test} must be in [0, 1) with val + test < 1")
    rest, test_idx = _stratified_holdout(labels, test, seed)
    tr, va = _stratified_holdout(labels[rest], val / (1 - test), seed + 1)
    return Split(rest[tr], rest[va], test_idx)


def kfold_indices(labels: np.ndarray, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Multi-label stratified K-fold: a list of (train, held-out) index pairs."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if k < 2 or k > len(labels):
        raise DataError(f"k-fold needs 2 <= k <= n_images, got k={k} for {len(labels)} images")
    kf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in kf.split(np.zeros(len(labels)), labels)]


def label_stats(ds: MultiLabelDataset) -> dict:
    """Counts a person wants first: per class, labels per image, combinations."""
    y = ds.labels.astype(int)
    per_image = y.sum(1)
    combos: dict[str, int] = {}
    for row in y:
        key = "+".join(c for c, v in zip(ds.classes, row) if v) or "(none)"
        combos[key] = combos.get(key, 0) + 1
    return {
        "n_images": len(ds),
        "n_classes": len(ds.classes),
        "classes": list(ds.classes),
        "per_class": {c: int(n) for c, n in zip(ds.classes, y.sum(0))},
        "labels_per_image": {str(k): int((per_image == k).sum()) for k in range(int(per_image.max()) + 1)},
        "mean_labels_per_image": float(per_image.mean()),
        "combinations": dict(sorted(combos.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def iter_batches(items: Sequence, size: int) -> Iterable[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]

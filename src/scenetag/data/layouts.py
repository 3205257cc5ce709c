"""Reading multi-label data sets in every supported layout, with errors naming the file and line.

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
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..io import atomic_write_csv
from .dataset import MultiLabelDataset
from .images import IMAGE_EXTS

log = logging.getLogger(__name__)

MIML_CLASSES = ("desert", "mountains", "sea", "sunset", "trees")
FORMATS = ("auto", "miml", "csv", "mat")
DEFAULT_DATA = Path("../shared/data/miml-scene")
MIML_SOURCE_URL = "http://lamda.nju.edu.cn/data_MIMLimage.ashx"


def _numeric_key(p: Path) -> tuple[int, int | str]:
    return (0, int(p.stem)) if _is_number(p.stem) else (1, p.stem)


def _is_number(stem: str) -> bool:
    # ASCII digits only: "²".isdigit() is True, but int("²") fails.
    return stem.isascii() and stem.isdigit()


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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class names as UTF-8 text ({e})") from None
    names = [n.strip() for n in re.split(r"[\n,]", text) if n.strip()]
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


def classes_file(root: Path) -> Path | None:
    """The data set's list of class names (``classes.txt``), if it has one."""
    return next((root / name for name in ("classes.txt", "classes") if (root / name).is_file()), None)


def _classes_for(root: Path, n: int) -> tuple[str, ...]:
    named = classes_file(root)
    if named is not None:
        classes = read_classes_file(named)
        if len(classes) != n:
            raise DataError(f"{named}: lists {len(classes)} classes but the labels have {n}")
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
    check_numbered(images, y, labels, root)
    return MultiLabelDataset(tuple(images), _classes_for(root, y.shape[1]), y, root, source=f"miml:{labels}")


def numbering_gap(images: list[Path]) -> str | None:
    """Why the image names are not the numbers 1..N (or 0..N-1), or None when they are."""
    if not all(_is_number(p.stem) for p in images):
        bad = next(p for p in images if not _is_number(p.stem))
        return f"{bad.name} is not a number"
    numbers = [int(p.stem) for p in images]
    start = 0 if numbers[0] == 0 else 1
    for expected, (number, path) in enumerate(zip(numbers, images), start):
        if number != expected:
            return f"{path.name} stands where {expected}{path.suffix} would" if number > expected else f"{number} appears twice"
    return None


def check_numbered(images: list[Path], y: np.ndarray, labels: Path, root: Path) -> None:
    """Label lines are matched to images by number: with a gap in the names (or a renamed file) every later label
    would shift silently. Gaps are accepted only when a labels table naming each image (a CSV beside it) agrees."""
    gap = numbering_gap(images)
    if gap is None:
        return
    for table in sorted(root.glob("*.csv")):
        try:
            named = load_csv(table, image_dir=images[0].parent)
        except DataError:
            continue
        by_path = {p.resolve(): row for p, row in zip(named.paths, named.labels)}
        if set(by_path) != {p.resolve() for p in images}:
            continue
        for p, row in zip(images, y):
            if not np.array_equal(by_path[p.resolve()], row):
                raise DataError(f"{p}: its line in {labels.name} disagrees with {table.name} (names are not 1..N, so the order cannot be trusted)")
        return
    raise DataError(f"{images[0].parent}: {labels.name} lines are matched to the images by number, but the names are not 1..N ({gap}); add a labels table naming each image (CSV) or pass it with --labels")


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
    check_numbered(images, y, mat, root)
    return MultiLabelDataset(tuple(images), _classes_for(root, y.shape[1]), y, root, source=f"mat:{mat}")


_IMAGE_COLUMNS = ("image", "filename", "file", "path", "image_id", "img", "name", "id")
_LABELS_COLUMNS = ("labels", "tags", "label")


def _read_csv_rows(csv_path: Path) -> list[list[str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot read CSV ({e})") from None
    if len(rows) < 2:
        raise DataError(f"{csv_path}: no data rows (empty data set)")
    return rows


def _tag_table(csv_path: Path, rows: list[list[str]], img_col: int, label_col: int, classes: Sequence[str] | None) -> tuple[list[str], tuple[str, ...], list[list[int]]]:
    """``filename,labels`` with space/comma separated names: (image names, classes, 0/1 rows)."""
    names, tag_lists = [], []
    for lineno, r in enumerate(rows[1:], 2):
        if len(r) != 2:
            raise DataError(f"{csv_path}, line {lineno}: expected 2 columns, got {len(r)}")
        names.append(r[img_col].strip())
        tag_lists.append([t for t in re.split(r"[\s,;|]+", r[label_col].strip()) if t])
    cls = tuple(classes) if classes else tuple(sorted({t for ts in tag_lists for t in ts}))
    index = {c: i for i, c in enumerate(cls)}
    y_rows = []
    for lineno, ts in enumerate(tag_lists, 2):
        unknown = [t for t in ts if t not in index]
        if unknown:
            raise DataError(f"{csv_path}, line {lineno}: unknown class {unknown[0]!r} (classes: {', '.join(cls)})")
        y_rows.append([int(c in ts) for c in cls])
    return names, cls, y_rows


def _one_hot_table(csv_path: Path, rows: list[list[str]], img_col: int, classes: Sequence[str] | None) -> tuple[list[str], tuple[str, ...], list[list[int]]]:
    """An image column and one 0/1 column per class: (image names, classes, 0/1 rows)."""
    header = [h.strip() for h in rows[0]]
    class_cols = [i for i in range(len(header)) if i != img_col]
    cls = tuple(header[i] for i in class_cols)
    if not cls:
        raise DataError(f"{csv_path}: no class columns besides the image column {header[img_col]!r}")
    unknown = [c for c in cls if classes and c not in classes]
    if unknown:
        raise DataError(f"{csv_path}: unknown class column(s) {unknown} (classes: {', '.join(classes)})")
    if len(set(cls)) != len(cls):
        raise DataError(f"{csv_path}: duplicate class columns in header {header}")
    names, y_rows = [], []
    for lineno, r in enumerate(rows[1:], 2):
        if len(r) != len(header):
            raise DataError(f"{csv_path}, line {lineno}: has {len(r)} columns, header has {len(header)}")
        names.append(r[img_col].strip())
        y_rows.append([parse_label_value(r[i].strip(), f"{csv_path}, line {lineno}, column {header[i]!r}") for i in class_cols])
    return names, cls, y_rows


def _image_paths(csv_path: Path, names: list[str], image_dir: Path, root: Path) -> tuple[Path, ...]:
    """Each row's image file: no name twice, no file twice under two names, none missing."""
    seen: dict[str, int] = {}
    for lineno, n in enumerate(names, 2):
        if n in seen:
            raise DataError(f"{csv_path}, line {lineno}: duplicate image {n!r} (first on line {seen[n]})")
        seen[n] = lineno
    paths = tuple(_resolve(image_dir, root, n) for n in names)
    first: dict[Path, int] = {}
    for lineno, p in enumerate(paths, 2):
        key = p.resolve()
        if key in first:
            raise DataError(f"{csv_path}, line {lineno}: {names[lineno - 2]!r} is the same image file as line {first[key]} ({p.name})")
        first[key] = lineno
    missing = [(lineno, p) for lineno, p in enumerate(paths, 2) if not p.is_file()]
    if missing:
        shown = "; ".join(f"line {ln}: {p}" for ln, p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{csv_path}: {len(missing)} image file(s) missing: {shown}{more}")
    return paths


def load_csv(csv_path: Path, image_dir: Path | None = None, classes: Sequence[str] | None = None) -> MultiLabelDataset:
    """A CSV table: image column + one 0/1 column per class, or ``filename,labels``."""
    rows = _read_csv_rows(csv_path)
    lower = [h.strip().lower() for h in rows[0]]
    img_col = next((lower.index(c) for c in _IMAGE_COLUMNS if c in lower), 0)
    label_col = next((lower.index(c) for c in _LABELS_COLUMNS if c in lower), None)
    if label_col is not None and len(lower) == 2:
        names, cls, y_rows = _tag_table(csv_path, rows, img_col, label_col, classes)
    else:
        names, cls, y_rows = _one_hot_table(csv_path, rows, img_col, classes)
    root = csv_path.parent
    paths = _image_paths(csv_path, names, image_dir or _find_image_dir(root), root)
    y = np.asarray(y_rows, dtype=np.uint8).reshape(len(paths), len(cls))
    return MultiLabelDataset(paths, cls, y, root, source=f"csv:{csv_path}")


def write_labels_csv(path: Path | str, images: Sequence[Path | str], classes: Sequence[str], labels: np.ndarray) -> Path:
    """A labels file in the CSV layout (``image`` + one 0/1 column per class, absolute image paths), written atomically."""
    rows = [[str(Path(image).resolve()), *(int(v) for v in row)] for image, row in zip(images, np.asarray(labels).tolist())]
    return atomic_write_csv(path, [["image", *classes]] + rows)


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
        return "miml"  # the documented rule: labels.json first, whatever else the folder holds
    for fmt, pattern in (("mat", "*.mat"), ("csv", "*.csv")):
        found = sorted(root.glob(pattern))
        if len(found) > 1:
            raise DataError(f"{root}: several possible labels files ({', '.join(p.name for p in found)}); choose one with --labels FILE")
        if found:
            return fmt
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
        named = classes_file(root)
        ds = load_csv(csv_path, image_dir=_find_image_dir(root), classes=read_classes_file(named) if named else None)
    if warn_empty_classes:
        empty = [c for c, n in zip(ds.classes, ds.labels.sum(0)) if n == 0]
        if empty:
            msg = f"class(es) with no positive example: {', '.join(empty)}"
            log.warning(msg)
            ds = MultiLabelDataset(ds.paths, ds.classes, ds.labels, ds.root, ds.source, (msg,))
    return ds


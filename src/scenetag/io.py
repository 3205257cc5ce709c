"""Atomic file writing: every file the tool writes goes to a temp name first, then ``os.replace``."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import OutputError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path in the target's folder; rename it over ``path`` only if the block succeeds.

    A symbolic link is written through (its target is replaced, the link stays); anything that is
    not a regular file (a FIFO, a device, a folder) is refused rather than replaced.
    """
    path = writable_target(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_p = Path(tmp)
    try:
        yield tmp_p
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.chmod(tmp_p, 0o666 & ~_UMASK)
        os.replace(tmp_p, path)
    finally:
        if tmp_p.exists():
            tmp_p.unlink()


def writable_target(path: Path) -> Path:
    """The file a write to ``path`` should replace: the target of a link; refuses non-regular files."""
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: exists and is not a regular file (a folder, FIFO or device); choose another output path (- writes to standard output)")
    return path


def refuse_overwriting(inputs: list[Path | str], outputs: list[Path | str]) -> None:
    """An output that is an input (or another output) would destroy it: refuse before any work."""
    seen: dict[Path, Path] = {}
    for p in inputs:
        seen[Path(p).resolve()] = Path(p)
    for out in outputs:
        key = Path(out).resolve()
        if key in seen:
            raise OutputError(f"{out}: would overwrite {seen[key]}, which this command reads or also writes; choose another output path")
        seen[key] = Path(out)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows (the first one a header) as CSV text: the one CSV dialect of every file scenetag writes."""
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def atomic_write_csv(path: Path | str, rows: Iterable[Sequence[Any]]) -> Path:
    """Header + rows as a CSV file, written atomically."""
    return atomic_write_text(path, csv_text(rows))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_save(path: Path | str, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``fig.savefig``) and move the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

"""Decoding image files and uploads into RGB, with clear errors and a pixel bound."""
from __future__ import annotations

import io
import stat
from pathlib import Path
from struct import error as struct_error
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Pillow's default bomb limit (~89 Mpx) warns; we refuse above it instead.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_FILE_BYTES = 512 * 2**20  # a compressed image file larger than this is not a photo


def open_image(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file fully as RGB with EXIF orientation applied.

    Raises :class:`DataError` naming the file for anything that is not a
    readable image (empty, truncated, text, too large).
    """
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would hang, /dev/zero would never end
            raise DataError(f"{path}: not a regular file, not an image")
        if st.st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: {st.st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit for one image file")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    return decode_image(data, str(path), max_pixels)


def header_pixels(data: bytes) -> int:
    """Width x height from an image's header, without decoding it (0 when the header is unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            return int(w) * int(h)
    except Exception:  # noqa: BLE001 - any unreadable header; decoding reports it properly later
        return 0


def decode_image(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes (from a file or an upload called ``name``) as RGB, EXIF applied."""

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
    if im.mode == "F":  # 32-bit float (e.g. TIFF): 0..1 is the usual range, else 0..255
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("float image with NaN or infinite pixels")
        hi = arr.max() if arr.size else 1.0
        scale = 255.0 if hi <= 1.0 else (1.0 if hi <= 255.0 else 255.0 / hi)
        return Image.fromarray((arr * scale).clip(0, 255).round().astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        arr = (arr / (hi if hi > 255 else 255.0) * 255.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    im.load()
    return im.copy()




def check_images(paths: Iterable[Path | str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[str]:
    """Decode every image; return one error message per bad file (empty list when all good)."""
    errors = []
    for p in paths:
        try:
            open_image(p, max_pixels=max_pixels)
        except DataError as e:
            errors.append(str(e))
    return errors


def thumbnail_jpeg(path: Path | str, side: int = 180, max_pixels: int | None = DEFAULT_MAX_PIXELS, quality: int = 80) -> bytes:
    """A JPEG of the image at most ``side`` pixels wide and high (for galleries in reports)."""
    img = open_image(path, max_pixels)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

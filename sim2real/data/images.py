"""Load reference frames of any size and mode as uint8 RGB squares.

load_images(["real/*.png", "more_frames/"], size=96)  # → (N, 96, 96, 3) uint8
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sim2real.errors import Sim2RealError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def expand_image_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Files, folders (their images, sorted) or glob strings → image files, in the given order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = str(p)
        if Path(s).is_dir():
            found = sorted(q for q in Path(s).iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise Sim2RealError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {s}")
            out += found
        elif Path(s).is_file():
            out.append(Path(s))
        elif glob.has_magic(s):
            found = sorted(Path(q) for q in glob.glob(s) if Path(q).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise Sim2RealError(f"no images match {s}")
            out += found
        else:
            raise Sim2RealError(f"no such image file or folder: {s}")
    if not out:
        raise Sim2RealError("no reference images given")
    return out


def to_square(img: np.ndarray, size: int, name: str = "image") -> np.ndarray:
    """Centre-crop to a square, then resize to size×size (area filter down, cubic up)."""
    h, w = img.shape[:2]
    if h != w:
        logger.warning("%s is %dx%d: centre-cropping to a square", name, w, h)
        m = min(h, w)
        y0, x0 = (h - m) // 2, (w - m) // 2
        img = img[y0 : y0 + m, x0 : x0 + m]
    if img.shape[0] != size:
        if h == w:
            logger.warning("%s is %dx%d: resizing to %dx%d", name, w, h, size, size)
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
        img = cv2.resize(img, (size, size), interpolation=interp)
    return np.ascontiguousarray(img)


def read_rgb(path: Path) -> np.ndarray:
    """One image file → uint8 (H, W, 3) RGB (grey, RGBA, palette and 16-bit handled)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                arr = arr / max(float(arr.max()), 1.0) * 255.0
                return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)  # transparent → white, not black
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise Sim2RealError(f"cannot read image {path}: {type(e).__name__}") from e


def load_images(paths: str | os.PathLike | Sequence[str | os.PathLike], size: int = 96) -> np.ndarray:
    """Reference frames (files, folders or globs; PNG/JPG/…; any mode and size) → uint8 (N, size, size, 3)."""
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size=}")
    files = expand_image_paths(paths)
    return np.stack([to_square(read_rgb(f), size, name=str(f)) for f in files])

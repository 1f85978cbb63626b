"""Decoded-image cache for training: each image decoded and downsized once, kept on disk.

Large dermoscopic JPEGs (PH2: 767x576, HAM10000: 600x450) cost more to decode than a 176 px
training step needs. :class:`ImageCache` stores every training image once, decoded, converted
to RGB and resized (shorter side to :func:`cache_side`, never upscaled), as an uncompressed
``uint8`` ``.npy`` file keyed by (absolute path, size in bytes, mtime, target side,
interpolation). Later epochs read ~100-200 kB instead of decoding a JPEG. Augmentation still
runs after the cache: it holds the resized, *un-augmented* image.

Memory is bounded independently of the dataset's size: nothing is held in RAM, entries are
written lazily by whichever DataLoader worker meets the image first (atomic ``os.replace``, so
concurrent workers and processes never read a half-written file), and a changed source file
(size or mtime) simply gets a new key. Only training images use the cache; the evaluation
transform (resize to size/crop_pct + centre crop) always starts from the original image, so
validation tensors are unchanged.

Location: ``$DERMLEARN_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/dermlearn/images`` (default
``~/.cache/dermlearn/images``).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dermlearn.atomic import atomic_write
from dermlearn.cache_dirs import user_cache_dir
from dermlearn.data.images import read_image
from dermlearn.data.sources import stat_image

__all__ = ["ImageCache", "cache_side", "default_image_cache_dir"]

CACHE_ENV = "DERMLEARN_IMAGE_CACHE"
FORMAT_VERSION = 1

_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def default_image_cache_dir() -> Path:
    """``$DERMLEARN_IMAGE_CACHE`` or ``~/.cache/dermlearn/images``."""
    return user_cache_dir("images", CACHE_ENV)


def cache_side(image_size: int, crop_pct: float = 0.875) -> int:
    """Shorter side of cached images: what the eval transform resizes to (size / crop_pct,
    as timm floors it), so random crops of 70-100% of the area still have >= ``image_size``
    source pixels across."""
    return int(math.floor(image_size / crop_pct))


class ImageCache:
    """``get(path)`` -> RGB PIL image, resized so its shorter side is ``side`` (or smaller
    originals kept as they are), decoded from the source only on the first call."""

    def __init__(self, root: str | os.PathLike | None = None, *, side: int,
                 interpolation: str = "bicubic"):
        self.root = Path(root) if root is not None else default_image_cache_dir()
        self.side = int(side)
        self.interpolation = interpolation if interpolation in _FILTERS else "bicubic"
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ImageCache({str(self.root)!r}, side={self.side}, {self.interpolation})"

    def key(self, path: str | os.PathLike) -> str:
        """Content-addressed by path, size, mtime and the resize settings."""
        path = os.path.abspath(os.fspath(path))
        st = stat_image(path)  # FileNotFoundError: read_image reports it in the project's words
        text = f"v{FORMAT_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}|{self.side}|" \
               f"{self.interpolation}"
        return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()

    def file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, path: str | os.PathLike) -> Image.Image:
        try:
            key = self.key(path)
        except OSError:
            return read_image(path)  # raises ImageDecodeError naming the file
        target = self.file(key)
        try:
            array = np.load(target, allow_pickle=False)
            if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
                self.hits += 1
                return Image.fromarray(array, "RGB")
        except (OSError, ValueError, EOFError):
            pass  # missing or damaged entry: rebuild it
        self.misses += 1
        image = self._resize(read_image(path).convert("RGB"))
        self._write(target, np.asarray(image, dtype=np.uint8))
        return image

    def _resize(self, image: Image.Image) -> Image.Image:
        """Shorter side to ``side`` exactly as torchvision's ``Resize(side)`` (the eval
        transform's first step) computes it, so the eval transform of a cached image equals
        that of the original."""
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        if short <= self.side:
            return image
        new_long = int(self.side * long / short)
        size = (self.side, new_long) if w <= h else (new_long, self.side)
        return image.resize(size, _FILTERS[self.interpolation])

    def _write(self, target: Path, array: np.ndarray) -> None:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, save, durable=False)
        except OSError:  # read-only or full disk: the cache is an optimisation only
            pass

    def entries(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.npy")) if self.root.exists() else 0

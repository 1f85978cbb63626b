"""Colour constancy: Shades of Gray (Finlayson & Trezzi 2004), as the ISIC 2019 winners
(Gessert et al.) applied it to every dermoscopy image before training and testing.

A photograph's illuminant is estimated per channel as the Minkowski p-norm mean of its pixels,
``e_c = (mean(I_c ** p)) ** (1 / p)`` (p = 1: Gray World; p -> infinity: max-RGB; p = 6 in the
ISIC work), normalised to unit length; each channel is then divided by ``sqrt(3) e_c``, so an
image lit by a neutral illuminant is left unchanged and a colour cast is removed. Pixels are
clipped to [0, 255].

>>> balanced = shades_of_gray(np.asarray(image), p=6)          # (H, W, 3) uint8
>>> transform = ShadesOfGray(6)                                 # PIL -> PIL, in a Compose
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from dermlearn.models.errors import PreprocessConfigError

__all__ = ["ShadesOfGray", "check_norm", "shades_of_gray"]


def check_norm(p: float) -> float:
    """The Minkowski norm ``p`` as a float >= 1, else a PreprocessConfigError."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise PreprocessConfigError(f"colour constancy norm p must be a number >= 1, "
                                    f"got {p!r}") from None
    if not math.isfinite(value) or value < 1:
        raise PreprocessConfigError(f"colour constancy norm p must be a finite number >= 1, "
                                    f"got {p!r}")
    return value


def shades_of_gray(pixels: np.ndarray, p: float = 6.0) -> np.ndarray:
    """``pixels`` (H, W, 3) RGB in [0, 255] with the Shades of Gray illuminant removed; uint8.

    An image whose channels' p-norm means are equal (a neutral illuminant) comes back unchanged;
    one with no light at all (every channel 0) too.
    """
    p = check_norm(p)
    image = np.asarray(pixels, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise PreprocessConfigError(f"shades_of_gray expects (H, W, 3) RGB pixels, got shape "
                                    f"{image.shape}")
    # The p-norm mean, computed on pixels scaled to [0, 1] (255 ** 6 is still exact in float64,
    # but the scaling keeps larger p finite).
    illuminant = np.mean((image / 255.0) ** p, axis=(0, 1)) ** (1.0 / p)
    length = float(np.linalg.norm(illuminant))
    if length == 0.0 or not np.all(illuminant > 0):
        return np.clip(image, 0, 255).round().astype(np.uint8)
    gains = 1.0 / (illuminant / length * math.sqrt(3.0))
    return np.clip(image * gains, 0, 255).round().astype(np.uint8)


class ShadesOfGray:
    """PIL RGB image -> PIL RGB image with :func:`shades_of_gray` applied (a transform step)."""

    def __init__(self, p: float = 6.0):
        self.p = check_norm(p)

    def __call__(self, image: Image.Image) -> Image.Image:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return Image.fromarray(shades_of_gray(np.asarray(rgb), self.p), mode="RGB")

    def __repr__(self) -> str:
        return f"ShadesOfGray(p={self.p:g})"

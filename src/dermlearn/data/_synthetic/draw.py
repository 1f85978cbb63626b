"""Colours, smooth noise and drawing primitives for the synthetic lesions.

Arrays are float32; masks are (size, size) in [0, 1]; colours are RGB in [0, 1], shape (3,);
an image being painted is (3, H, W). Coordinates and lengths are px.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# --------------------------------------------------------------------------------------
# colours (RGB in [0, 1])
# --------------------------------------------------------------------------------------
_SKIN_ANCHORS = np.array([
    (0.96, 0.81, 0.74),  # very fair
    (0.94, 0.75, 0.70),  # fair, pinkish
    (0.89, 0.69, 0.57),  # medium
    (0.79, 0.59, 0.45),  # olive / tan
    (0.62, 0.44, 0.33),  # brown
], dtype=np.float32)
_SKIN_WEIGHTS = np.array([0.30, 0.27, 0.24, 0.12, 0.07])
_SKIN_REF = np.array((0.90, 0.72, 0.62), dtype=np.float32)

_C = {
    "black": (0.10, 0.07, 0.07),
    "dark_brown": (0.30, 0.17, 0.10),
    "mid_brown": (0.47, 0.29, 0.17),
    "light_brown": (0.64, 0.44, 0.29),
    "tan": (0.74, 0.57, 0.40),
    "blue_grey": (0.40, 0.46, 0.56),
    "white": (0.95, 0.93, 0.91),
    "red": (0.80, 0.22, 0.24),
    "bright_red": (0.80, 0.09, 0.14),
    "dark_red": (0.52, 0.07, 0.14),
    "pink": (0.93, 0.66, 0.66),
    "pearl": (0.96, 0.84, 0.83),
    "purple": (0.44, 0.14, 0.32),
    "blue_purple": (0.33, 0.15, 0.40),
    "ivory": (0.97, 0.94, 0.84),
}


def _col(name: str) -> np.ndarray:
    return np.asarray(_C[name], dtype=np.float32)


# --------------------------------------------------------------------------------------
# small numeric helpers
# --------------------------------------------------------------------------------------
_NOISE_STD = 0.82  # std of a bicubic upsampling of unit-variance white noise


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise, shape (size, size), about zero mean and unit std; ``cells`` sets the scale."""
    grid = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    grid = (grid - grid.mean()) / (grid.std() * _NOISE_STD + 1e-6)
    return _upsample(grid, size)


def _fbm(rng: np.random.Generator, size: int, cells: Sequence[int] = (3, 6, 12),
         gains: Sequence[float] = (1.0, 0.5, 0.25)) -> np.ndarray:
    """Sum of noise octaves, shape (size, size), about unit std (octaves summed on the finest grid)."""
    n = max(cells) + 1
    acc = np.zeros((n, n), np.float32)
    for c, g in zip(cells, gains):
        grid = rng.standard_normal((c + 1, c + 1), dtype=np.float32)
        acc += g * (grid if c + 1 == n else _upsample(grid, n))
    acc = (acc - acc.mean()) / (acc.std() * _NOISE_STD + 1e-6)
    return _upsample(acc, size)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blend(canvas: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> None:
    """In place: ``canvas += (colour - canvas) * weight``; canvas (3, H, W), colour (3,), weight (H, W)."""
    canvas += (np.asarray(colour, np.float32).reshape(3, 1, 1) - canvas) * weight


def _network(rng: np.random.Generator, size: int, period: float, width: float,
             jitter: float = 0.8, box: tuple[int, int] | None = None) -> np.ndarray:
    """A honeycomb-like pigment network (Voronoi cell borders) in [0, 1], shape (size, size).

    ``period``: mean hole diameter, px; ``width``: line half-width, px; ``jitter`` in [0, 1]
    makes the holes irregular; ``box = (lo, hi)`` restricts the work to that px square.
    """
    lo, hi = box if box is not None else (0, size)
    lo, hi = max(0, int(lo)), min(size, int(hi))
    out = np.zeros((size, size), np.float32)
    if hi <= lo:
        return out
    ax = np.arange(lo, hi, dtype=np.float32)
    n = int(np.ceil(size / period)) + 3
    base = np.arange(n, dtype=np.float32) - 0.5
    px = (base[None, :] + jitter * (rng.random((n, n), dtype=np.float32) - 0.5)) * period
    py = (base[:, None] + jitter * (rng.random((n, n), dtype=np.float32) - 0.5)) * period
    cell = (ax // period).astype(np.intp) + 1
    m = hi - lo
    f1 = np.full((m, m), np.inf, np.float32)
    f2 = f1.copy()
    tmp = np.empty_like(f1)
    for di in (-1, 0, 1):
        rx, ry = px[cell + di], py[cell + di]             # (m, n): the cell rows of each px row
        for dj in (-1, 0, 1):
            dx = ax[None, :] - np.take(rx, cell + dj, axis=1)
            dy = ax[:, None] - np.take(ry, cell + dj, axis=1)
            d = dx * dx + dy * dy
            np.maximum(f1, d, out=tmp)
            np.minimum(f2, tmp, out=f2)
            np.minimum(f1, d, out=f1)
    edge = np.sqrt(f2) - np.sqrt(f1)                     # ~2x distance to the nearest cell border
    out[lo:hi, lo:hi] = np.exp(-(edge / (2 * width)) ** 2)
    return out


def _furrows(rng: np.random.Generator, size: int, cells: int, width: float) -> np.ndarray:
    """Worm-like furrows (zero crossings of band-limited noise) in [0, 1], shape (size, size)."""
    return np.exp(-(_noise(rng, size, cells) / width) ** 2)


def _draw_dots(size: int, centres: np.ndarray, radii: np.ndarray, blur: float = 0.0,
               aspect: np.ndarray | None = None) -> np.ndarray:
    """Filled ellipses on a float mask in [0, 1], shape (size, size); centres/radii in px."""
    out = np.zeros((size, size), np.float32)
    if len(radii) == 0:
        return out
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    radii = np.asarray(radii, dtype=np.float64)
    aspect = np.ones(len(radii)) if aspect is None else np.asarray(aspect, dtype=np.float64)
    rx, ry = radii * aspect, radii / aspect
    pad = 3 * blur + 2
    x0 = int(max(0, np.floor((centres[:, 0] - rx).min() - pad)))
    y0 = int(max(0, np.floor((centres[:, 1] - ry).min() - pad)))
    x1 = int(min(size, np.ceil((centres[:, 0] + rx).max() + pad)))
    y1 = int(min(size, np.ceil((centres[:, 1] + ry).max() + pad)))
    if x1 <= x0 or y1 <= y0:
        return out
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(mask)
    for (x, y), ex, ey in zip((centres - (x0, y0)).tolist(), rx.tolist(), ry.tolist()):
        draw.ellipse((x - ex, y - ey, x + ex, y + ey), fill=255)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    out[y0:y1, x0:x1] = np.asarray(mask, dtype=np.float32) * np.float32(1 / 255)
    return out


def _points_in_lesion(rng: np.random.Generator, n: int, centre: float, radius: float,
                      rmin: float = 0.0, rmax: float = 1.0,
                      angle: tuple[float, float] = (0.0, 2 * np.pi)) -> np.ndarray:
    """``n`` random (x, y) px points in an annulus of the lesion disk, shape (n, 2)."""
    t = rng.uniform(*angle, size=n)
    rad = radius * np.sqrt(rng.uniform(rmin ** 2, rmax ** 2, size=n))
    return np.stack([centre + rad * np.cos(t), centre + rad * np.sin(t)], axis=1)


def _jittered_grid(rng: np.random.Generator, size: int, spacing: float, jitter: float) -> np.ndarray:
    """Points of a hexagonal grid over the canvas with random jitter, shape (n, 2), px."""
    ys = np.arange(spacing / 2, size, spacing * 0.866)
    pts = []
    for i, y in enumerate(ys):
        xs = np.arange(spacing / 2 + (spacing / 2) * (i % 2), size, spacing)
        pts.append(np.stack([xs, np.full_like(xs, y)], axis=1))
    p = np.concatenate(pts, axis=0)
    return p + rng.normal(0, jitter * spacing, size=p.shape)

"""Synthetic, dermoscopy-like skin-lesion images for demos and tests.

The images are procedurally drawn cartoons of the ABCD-rule look of seven HAM10000
classes (``akiec``, ``bcc``, ``bkl``, ``df``, ``mel``, ``nv``, ``vasc``). They are
**synthetic**: no real patient is depicted, and a model's accuracy on them says nothing
about clinical performance. They exist so that ``dermlearn demo`` runs end to end on a
fresh machine with no downloaded data, and so that training on them is learnable.

Rendering is vectorised numpy plus a few Pillow drawing calls; a 224 px image takes
about 10-20 ms on one CPU core. Everything is deterministic given a :class:`numpy.random.Generator`
(or a seed for :func:`make_synthetic_dataset`).

Example::

    >>> import numpy as np
    >>> img = render_lesion("mel", np.random.default_rng(0))
    >>> img.size, img.mode
    ((224, 224), 'RGB')
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "SYNTHETIC_CLASSES",
    "DEFAULT_CLASSES",
    "MANIFEST_COLUMNS",
    "render_lesion",
    "make_synthetic_dataset",
]

#: Every class :func:`render_lesion` can draw (HAM10000 codes).
SYNTHETIC_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
#: Classes written by :func:`make_synthetic_dataset` unless told otherwise.
DEFAULT_CLASSES: tuple[str, ...] = ("mel", "nv", "bkl", "bcc")
#: Columns of the ``manifest.csv`` written by :func:`make_synthetic_dataset`, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id", "path", "label", "lesion_id", "patient_id", "age", "sex", "site", "label_source",
)

_JPEG_QUALITY = 92
_IMAGE_ID_RE = re.compile(r"^SYN_\d{7}\.jpg$")

README_TEXT = """\
SYNTHETIC DATA - NOT REAL PATIENTS
==================================

Every image in this folder was generated procedurally by dermlearn
(dermlearn.data.synthetic.make_synthetic_dataset). They are cartoons of
dermoscopy images, drawn from simple rules (asymmetry, border, colour,
size), with made-up metadata (age, sex, site, patient and lesion ids).

* No image shows a real person or a real skin lesion.
* The labels are the rules used to draw the images, not diagnoses.
* Accuracy, sensitivity, AUC or any other number measured on this data
  says NOTHING about clinical performance. Never use it to judge, compare,
  validate or advertise a model for medical use.

The data exists only so that the dermlearn demo and tests run on a fresh
machine without downloading a real dataset.
"""

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


# --------------------------------------------------------------------------------------
# the lesion layer: the lesion alone, centred in its own RGBA frame
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """Class-dependent shape parameters; radii as fractions of the image size."""

    radius: tuple[float, float]        # mean radius R0 / size
    aspect: tuple[float, float]        # ellipse elongation
    low: float                         # amplitude of harmonics 1-3 (asymmetry)
    high: float                        # amplitude of harmonics 4-12 (border irregularity)
    notches: tuple[int, int]           # number of notches cut into the border
    rough: float                       # fractal border noise, fraction of R0
    soft: tuple[float, float]          # edge softness, fraction of R0
    opacity: tuple[float, float]       # maximum alpha


_SHAPES: dict[str, _Shape] = {
    "mel":   _Shape((0.27, 0.36), (1.0, 1.45), 0.12, 0.035, (2, 5), 0.07, (0.03, 0.10), (0.95, 1.0)),
    "nv":    _Shape((0.12, 0.19), (1.0, 1.2), 0.02, 0.005, (0, 0), 0.012, (0.05, 0.10), (0.85, 0.97)),
    "bkl":   _Shape((0.19, 0.29), (1.05, 1.45), 0.05, 0.012, (0, 1), 0.03, (0.015, 0.035), (0.9, 0.98)),
    "bcc":   _Shape((0.18, 0.30), (1.0, 1.35), 0.06, 0.02, (0, 2), 0.05, (0.05, 0.10), (0.7, 0.88)),
    "vasc":  _Shape((0.10, 0.18), (1.0, 1.3), 0.05, 0.02, (0, 1), 0.02, (0.02, 0.04), (0.95, 1.0)),
    "df":    _Shape((0.11, 0.17), (1.0, 1.3), 0.03, 0.01, (0, 0), 0.03, (0.18, 0.28), (0.8, 0.92)),
    "akiec": _Shape((0.19, 0.30), (1.0, 1.5), 0.08, 0.03, (0, 2), 0.07, (0.12, 0.22), (0.75, 0.9)),
}


@dataclass
class _Ctx:
    """The lesion's own canvas (lesion centred); arrays are (S, S)."""

    rng: np.random.Generator
    size: int
    centre: float      # px
    r0: float          # mean lesion radius, px
    d: np.ndarray      # normalised radius: 0 at the centre, ~1 on the border

    def box(self, margin: float = 1.15) -> tuple[int, int]:
        """The px square (lo, hi) holding the lesion, for work that can be cropped."""
        half = min(0.5 * self.size, margin * 1.45 * self.r0)
        return int(self.centre - half), int(np.ceil(self.centre + half)) + 1


def _lesion_geometry(label: str, rng: np.random.Generator, size: int) -> tuple[_Ctx, np.ndarray, float]:
    """Sample a border r(theta) and return the context, the alpha mask (S, S) and max opacity."""
    sp = _SHAPES[label]
    r0 = rng.uniform(*sp.radius) * size
    e = np.float32(np.sqrt(rng.uniform(*sp.aspect)))
    rot = rng.uniform(0, np.pi)  # orientation of the long axis
    cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    c = (size - 1) / 2
    ax = np.arange(size, dtype=np.float32) - np.float32(c)
    u = (cr * ax[None, :] + sr * ax[:, None]) / e
    v = (cr * ax[:, None] - sr * ax[None, :]) * e
    rr = np.sqrt(u * u + v * v)
    z = ((u + 1j * v) / np.maximum(rr, 1e-3)).astype(np.complex64)   # e^{i theta}

    # r(theta) = R0 (1 + sum_k a_k cos(k theta + phi_k) - notches), via powers of e^{i theta}
    amps = np.zeros(13, np.complex128)
    for k in range(1, 13):
        a = sp.low * rng.uniform(0.3, 1.0) / k ** 0.5 if k <= 3 else sp.high * rng.uniform(0, 1.0) * 3 / k
        amps[k] = a * np.exp(1j * rng.uniform(0, 2 * np.pi))
    acc = np.zeros_like(z)
    zk = np.ones_like(z)
    for k in range(1, 13):
        zk *= z
        acc += np.complex64(amps[k]) * zk
    rad = 1.0 + acc.real
    for _ in range(rng.integers(sp.notches[0], sp.notches[1] + 1)):
        cos_dt = (z * np.complex64(np.exp(-1j * rng.uniform(0, 2 * np.pi)))).real
        kappa = np.float32(1.0 / rng.uniform(0.06, 0.18) ** 2)
        rad -= np.float32(rng.uniform(0.08, 0.2)) * np.exp(kappa * (cos_dt - 1.0))
    rad = np.minimum(rad * np.float32(r0), np.float32(0.47 * size))

    d = rr / rad + np.float32(sp.rough) * _fbm(rng, size, (4, 9, 18))
    soft = np.float32(rng.uniform(*sp.soft))
    if label == "mel":  # partly abrupt, partly fading border
        soft = soft * (1.0 + 0.8 * (z * np.complex64(np.exp(-1j * rng.uniform(0, 2 * np.pi)))).real)
    alpha = _smoothstep((1.0 - d) / (2 * soft) + 0.5).astype(np.float32)
    ctx = _Ctx(rng=rng, size=size, centre=c, r0=float(r0), d=d.astype(np.float32))
    return ctx, alpha, float(rng.uniform(*sp.opacity))


def _paint_mel(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    palette = {
        "black": (0.12, 0.08, 0.08), "blue_grey": (0.44, 0.47, 0.53), "red": (0.68, 0.40, 0.38),
        "light_brown": (0.63, 0.44, 0.30), "blue_white": (0.66, 0.68, 0.74),
        "regression": (0.86, 0.81, 0.80),
    }
    names = ["dark_brown", "mid_brown"] + list(rng.choice(
        list(palette), size=rng.integers(2, 5), replace=False, p=[.28, .22, .14, .20, .09, .07]))
    cols = np.stack([np.float32(palette[n]) if n in palette else _col(n) for n in names])
    brownish = np.array([n in ("dark_brown", "mid_brown", "light_brown") for n in names])
    ax = (np.arange(S, dtype=np.float32) - np.float32(ctx.centre)) / np.float32(ctx.r0)
    w = np.empty((len(cols), S, S), np.float32)
    for i in range(len(cols)):
        t = rng.uniform(0, 2 * np.pi)  # asymmetric drift: each colour piles up on one side
        drift = 0.8 * (np.float32(np.cos(t)) * ax[None, :] + np.float32(np.sin(t)) * ax[:, None])
        bias = 0.3 if brownish[i] else 0.0
        w[i] = (_fbm(rng, S, (3, 6, 12)) + drift + rng.normal(bias, 0.4)) / 0.35
    w = np.exp(w - w.max(axis=0, keepdims=True))
    w /= w.sum(axis=0, keepdims=True)
    img = np.einsum("kyx,kc->cyx", w, cols).astype(np.float32)
    img *= 1.0 + 0.08 * _fbm(rng, S, (8, 16))
    # atypical network in the brown areas: irregular holes, thick, broken, uneven lines
    net = _network(rng, S, period=rng.uniform(0.035, 0.05) * S, width=rng.uniform(1.2, 1.8) * S / 224,
                   jitter=1.0, box=ctx.box())
    broken = _smoothstep(_noise(rng, S, 16) + 0.8)
    region = w[brownish].sum(axis=0) * _smoothstep(_noise(rng, S, 4) + 0.6)
    _blend(img, _col("dark_brown") * 0.8, 0.75 * net * broken * region)
    # peppering (fine grey granules) in the blue / white areas
    pepper = _smoothstep((_noise(rng, S, 70) - 1.4) / 0.5) * (1.0 - w[brownish].sum(axis=0))
    _blend(img, np.float32((0.30, 0.30, 0.36)), 0.7 * pepper)
    # irregular dots and globules, clustered on one side of the periphery
    t0 = rng.uniform(0, 2 * np.pi)
    n = int(rng.integers(10, 35))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.5, 1.0, (t0, t0 + rng.uniform(1.5, 3.5)))
    dots = _draw_dots(S, pts, rng.uniform(0.004, 0.013, n) * S, blur=0.7,
                      aspect=rng.uniform(0.7, 1.4, n))
    _blend(img, _col("black") * 1.3, 0.85 * dots)
    return img


def _paint_nv(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * np.float32((0.60, 0.40, 0.26)) + t * np.float32((0.42, 0.25, 0.15))
    grad = rng.uniform(-0.2, 0.25)  # >0: darker centre
    shade = 1.0 - grad * (0.5 - np.clip(ctx.d, 0, 1)) + 0.04 * _fbm(rng, S, (3, 6))
    img = base[:, None, None] * shade
    kind = rng.choice(["reticular", "globular", "homogeneous"], p=[0.55, 0.25, 0.20])
    fade = 1.0 - _smoothstep((ctx.d - 0.5) / 0.5)  # the pattern thins out towards the border
    if kind == "reticular":
        net = _network(rng, S, period=rng.uniform(0.028, 0.038) * S, width=0.8 * S / 224,
                       jitter=0.6, box=ctx.box())
        img *= 1.0 - rng.uniform(0.3, 0.45) * net * fade
    elif kind == "globular":
        pts = _jittered_grid(rng, S, rng.uniform(0.035, 0.05) * S, 0.15)
        keep = np.hypot(pts[:, 0] - ctx.centre, pts[:, 1] - ctx.centre) < 0.85 * ctx.r0
        pts = pts[keep]
        glob = _draw_dots(S, pts, rng.uniform(0.008, 0.013, len(pts)) * S, blur=0.9)
        _blend(img, _col("dark_brown"), 0.55 * glob * fade)
    return img


def _paint_bkl(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * _col("tan") + t * np.float32((0.66, 0.49, 0.33))
    img = base[:, None, None] * (1.0 + 0.08 * _fbm(rng, S, (4, 8)))
    # cerebriform "stuck-on" surface: dark fissures between light waxy ridges (gyri)
    cells = int(rng.integers(12, 19))
    fissure = _furrows(rng, S, cells, 0.4)
    img *= 1.0 - 0.4 * fissure
    ridge = _smoothstep(0.7 * _noise(rng, S, 2 * cells))
    _blend(img, np.float32((0.86, 0.76, 0.60)), 0.25 * ridge)
    # milia-like cysts (white-yellow dots) and comedo-like openings (dark plugs)
    n = int(rng.integers(4, 14))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.8)
    milia = _draw_dots(S, pts, rng.uniform(0.006, 0.015, n) * S, blur=1.1)
    _blend(img, _col("ivory"), 0.9 * milia)
    n = int(rng.integers(3, 10))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.85)
    comedo = _draw_dots(S, pts, rng.uniform(0.005, 0.011, n) * S, blur=0.7,
                        aspect=rng.uniform(0.6, 1.6, n))
    _blend(img, _col("dark_brown"), 0.8 * comedo)
    return img


def _draw_vessels(rng: np.random.Generator, size: int, centre: float, r0: float) -> np.ndarray:
    """Arborizing (tree-like branching) vessels as a mask (S, S) in [0, 1]."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    scale = size / 224

    def branch(x: float, y: float, ang: float, length: float, width: float, depth: int) -> None:
        pts = [(x, y)]
        step = length / 6
        for _ in range(6):
            ang += rng.normal(0, 0.25)
            x, y = x + step * np.cos(ang), y + step * np.sin(ang)
            pts.append((x, y))
        draw.line(pts, fill=255, width=max(1, int(round(width))), joint="curve")
        if depth > 0 and width > 0.9 * scale:
            for sgn in (-1, 1):
                branch(x, y, ang + sgn * rng.uniform(0.35, 0.8), length * rng.uniform(0.55, 0.75),
                       width * 0.7, depth - 1)

    for _ in range(int(rng.integers(3, 7))):
        x, y = _points_in_lesion(rng, 1, centre, r0, 0.1, 0.7)[0]
        ang = np.arctan2(y - centre, x - centre) + rng.normal(0, 0.6)  # grow outwards
        branch(x, y, ang, r0 * rng.uniform(0.35, 0.55), rng.uniform(2.2, 3.4) * scale, 3)
    mask = mask.filter(ImageFilter.GaussianBlur(0.6 * scale))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _paint_bcc(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * np.float32((0.91, 0.60, 0.62)) + t * _col("pink")
    img = base[:, None, None] * (1.0 + 0.05 * _fbm(rng, S, (4, 8, 16)))
    # shiny white (pearly) areas
    shine = _smoothstep(_noise(rng, S, 8) - 0.9)
    _blend(img, _col("pearl"), 0.7 * shine)
    # blue-grey ovoid nests
    n = int(rng.integers(1, 6))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.7)
    nests = _draw_dots(S, pts, rng.uniform(0.02, 0.05, n) * S, blur=1.8,
                       aspect=rng.uniform(0.6, 1.6, n))
    nests *= 0.75 + 0.25 * _smoothstep(_noise(rng, S, 20) + 0.5)
    _blend(img, _col("blue_grey"), nests)
    alpha += (1.0 - alpha) * 0.9 * nests * (ctx.d < 1.0)
    # ulceration / crust, sometimes
    if rng.uniform() < 0.35:
        pts = _points_in_lesion(rng, 1, ctx.centre, ctx.r0, 0.0, 0.4)
        ulc = _draw_dots(S, pts, rng.uniform(0.03, 0.06, 1) * S, blur=2.0,
                         aspect=rng.uniform(0.7, 1.4, 1))
        ulc *= _smoothstep(_noise(rng, S, 12) + 1.0)
        _blend(img, np.float32((0.45, 0.14, 0.10)), ulc)
        alpha += (1.0 - alpha) * ulc
    # arborizing telangiectasia: in focus, bright red, opaque
    ves = _draw_vessels(rng, S, ctx.centre, ctx.r0) * _smoothstep((1.1 - ctx.d) / 0.2)
    _blend(img, _col("bright_red"), ves)
    alpha += (1.0 - alpha) * 0.95 * ves
    return img


def _paint_vasc(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    septa = np.float32((0.86, 0.56, 0.58))
    img = np.broadcast_to(septa[:, None, None], (3, S, S)).copy()
    hues = [_col("red"), _col("dark_red"), _col("purple"), _col("blue_purple")]
    main = int(rng.integers(0, 4))
    spacing = rng.uniform(0.22, 0.32) * ctx.r0
    pts = _jittered_grid(rng, S, spacing, 0.18)
    pts = pts[np.hypot(pts[:, 0] - ctx.centre, pts[:, 1] - ctx.centre) < 1.15 * ctx.r0]
    which = np.clip(main + rng.integers(-1, 2, len(pts)), 0, 3)
    for h in range(4):
        sel = which == h
        if not sel.any():
            continue
        m = _draw_dots(S, pts[sel], rng.uniform(0.36, 0.48, int(sel.sum())) * spacing, blur=0.9,
                       aspect=rng.uniform(0.8, 1.25, int(sel.sum())))
        _blend(img, hues[h] * np.float32(rng.uniform(0.9, 1.1)), m)
    img *= 1.0 + 0.05 * _fbm(rng, S, (5, 10))
    if rng.uniform() < 0.4:  # whitish veil
        _blend(img, _col("white"), 0.25 * _smoothstep(_noise(rng, S, 4)))
    return img


def _paint_df(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * _col("light_brown") + t * np.float32((0.80, 0.56, 0.48))
    img = base[:, None, None] * (1.0 + 0.04 * _fbm(rng, S, (4, 8)))
    # faint, delicate peripheral network
    net = _network(rng, S, period=rng.uniform(0.025, 0.032) * S, width=0.6 * S / 224,
                   jitter=0.9, box=ctx.box(1.4))
    ring = _smoothstep((ctx.d - 0.35) / 0.35) * (1.0 - _smoothstep((ctx.d - 0.8) / 0.45))
    img *= 1.0 - 0.22 * net * ring * _smoothstep(_noise(rng, S, 10) + 1.0)
    # central white scar-like patch: irregular, fuzzy, with a pink rim
    dc = ctx.d / rng.uniform(0.6, 0.8) + 0.45 * _fbm(rng, S, (5, 10, 20))
    scar = _smoothstep((1.0 - dc) / 0.6)
    _blend(img, np.float32((0.86, 0.62, 0.60)), 0.5 * _smoothstep((1.4 - dc) / 0.6))
    _blend(img, np.float32((0.93, 0.89, 0.87)), 0.9 * scar)
    # the scar is opaque; the brown halo fades into the skin
    alpha *= 0.6 + 0.4 * (1.0 - _smoothstep((ctx.d - 0.4) / 0.7))
    alpha += (1.0 - alpha) * scar
    return img


def _paint_akiec(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * np.float32((0.90, 0.52, 0.50)) + t * np.float32((0.80, 0.37, 0.38))
    img = base[:, None, None] * (1.0 + 0.08 * _fbm(rng, S, (6, 14, 30)))
    # strawberry pattern: red pseudo-network around white-yellow follicular openings
    spacing = rng.uniform(0.045, 0.065) * S
    pts = _jittered_grid(rng, S, spacing, 0.2)
    pts = pts[np.hypot(pts[:, 0] - ctx.centre, pts[:, 1] - ctx.centre) < 1.1 * ctx.r0]
    r = rng.uniform(0.12, 0.2, len(pts)) * spacing
    halo = _draw_dots(S, pts, r * 2.2, blur=1.8)
    foll = _draw_dots(S, pts, r, blur=0.9)
    _blend(img, np.float32((0.93, 0.68, 0.64)), 0.5 * halo)
    _blend(img, _col("ivory"), 0.75 * foll)
    # dotted / glomerular vessels in the red pseudo-network
    n = int(rng.integers(15, 50))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.95)
    vessels = _draw_dots(S, pts, rng.uniform(0.003, 0.007, n) * S, blur=0.6)
    _blend(img, np.float32((0.66, 0.12, 0.16)), 0.8 * vessels)
    # rough white-yellow scale in patches: flaky, with fissured edges
    patches = _smoothstep(_noise(rng, S, 5) + rng.uniform(-0.5, 0.4))
    flakes = _smoothstep((_fbm(rng, S, (10, 24, 48), (1.0, 0.7, 0.5)) + 1.2 * patches - 1.1) / 0.5)
    scale = flakes * (1.0 - 0.5 * _furrows(rng, S, 30, 0.3))
    _blend(img, np.float32((0.95, 0.93, 0.86)), 0.85 * scale)
    alpha += (1.0 - alpha) * 0.8 * scale * (ctx.d < 1.0)
    return img


# A painter returns the lesion's colour, (3, S, S) in [0, 1], and may raise alpha in place
# (opaque vessels, scale, scars).
_PAINTERS: dict[str, Callable[[_Ctx, np.ndarray], np.ndarray]] = {
    "mel": _paint_mel, "nv": _paint_nv, "bkl": _paint_bkl, "bcc": _paint_bcc,
    "vasc": _paint_vasc, "df": _paint_df, "akiec": _paint_akiec,
}


def _check_label(label: str) -> None:
    if label not in _PAINTERS:
        raise ValueError(f"cannot render synthetic lesion of class {label!r}; "
                         f"supported classes: {', '.join(SYNTHETIC_CLASSES)}")


def _sample_skin(rng: np.random.Generator) -> np.ndarray:
    """A skin tone, RGB in [0, 1], shape (3,)."""
    i = int(rng.choice(len(_SKIN_ANCHORS), p=_SKIN_WEIGHTS))
    j = min(i + 1, len(_SKIN_ANCHORS) - 1)
    t = rng.uniform(0, 0.6)
    skin = (1 - t) * _SKIN_ANCHORS[i] + t * _SKIN_ANCHORS[j]
    return (skin * rng.uniform(0.97, 1.03, 3)).astype(np.float32)


def _lesion_layer(label: str, rng: np.random.Generator, size: int, skin: np.ndarray) -> Image.Image:
    """The lesion alone, centred, as RGBA (alpha = lesion coverage), colours adapted to ``skin``."""
    ctx, alpha, opacity = _lesion_geometry(label, rng, size)
    img = _PAINTERS[label](ctx, alpha)
    # pigment looks darker on darker skin
    img = img * ((skin / _SKIN_REF) ** 0.6)[:, None, None]
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    for i in range(3):
        rgba[..., i] = np.clip(img[i] * 255 + 0.5, 0, 255)
    rgba[..., 3] = np.clip(alpha * opacity * 255 + 0.5, 0, 255)
    return Image.fromarray(rgba)


# --------------------------------------------------------------------------------------
# one photograph of a lesion: placement, skin, hairs, lighting, dermoscope vignetting
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Lesion:
    """Everything that stays the same when one lesion is photographed again."""

    label: str
    layer: Image.Image     # RGBA, the lesion centred in the frame
    skin: np.ndarray       # (3,) RGB in [0, 1]
    hairiness: float       # expected number of hairs per photograph


def _sample_lesion(label: str, rng: np.random.Generator, size: int,
                   skin: np.ndarray | None = None) -> _Lesion:
    _check_label(label)
    skin = _sample_skin(rng) if skin is None else skin
    layer = _lesion_layer(label, rng, size, skin)
    hairiness = float(rng.choice([0.0, 2.0, 6.0, 14.0], p=[0.3, 0.3, 0.25, 0.15]))
    return _Lesion(label, layer, skin, hairiness)


def _place(layer: Image.Image, angle: float, scale: float, shift: tuple[float, float]) -> Image.Image:
    """Rotate (rad), scale and shift (px) the RGBA layer about the image centre."""
    S = layer.size[0]
    c = S / 2  # Pillow's continuous coordinates: pixel centres at i + 0.5
    ca, sa = np.cos(angle) / scale, np.sin(angle) / scale
    # output point p -> input point c + R(-angle) (p - c - shift) / scale
    tx, ty = c + shift[0], c + shift[1]
    coeffs = (ca, sa, c - ca * tx - sa * ty, -sa, ca, c + sa * tx - ca * ty)
    return layer.transform((S, S), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def _draw_hairs(rng: np.random.Generator, size: int, n: int) -> Image.Image | None:
    """``n`` dark curved hairs as an antialiased 'L' coverage mask, or None when ``n == 0``."""
    if n == 0:
        return None
    big = 2 * size  # drawn at 2x and reduced: cheap antialiasing
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    s = big / 224
    base_dir = rng.uniform(0, np.pi)
    tt = np.linspace(0, 1, 24)[:, None]
    for _ in range(n):
        p0 = rng.uniform(-0.1, 1.1, 2) * big
        ang = base_dir + rng.normal(0, 0.5)
        length = rng.uniform(0.3, 1.1) * big
        p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        bend = rng.normal(0, 0.18) * length
        p1 = (p0 + p2) / 2 + bend * np.array([-np.sin(ang), np.cos(ang)])
        pts = (1 - tt) ** 2 * p0 + 2 * (1 - tt) * tt * p1 + tt ** 2 * p2  # quadratic Bezier
        draw.line([tuple(p) for p in pts.tolist()], fill=int(rng.integers(170, 240)),
                  width=max(1, int(round(rng.uniform(0.9, 3.0) * s))), joint="curve")
    return mask.reduce(2)


def _photograph(lesion: _Lesion, rng: np.random.Generator, jitter: float = 0.0) -> Image.Image:
    """One dermoscopic photograph of ``lesion``, RGB.

    ``jitter`` scales the view-to-view change of rotation (sd 0.25 rad), scale (sd 6 %) and
    position (sd 4 % of the image); 0 keeps the lesion as drawn, moved by a whole-px shift.
    """
    S = lesion.layer.size[0]
    c = np.float32((S - 1) / 2)
    ax = (np.arange(S, dtype=np.float32) - c) / np.float32(S)   # image-relative coordinates

    # skin: tone with blotchy low-frequency variation and fine texture, patchy redness, skin lines
    skin = lesion.skin * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    tone = 1.0 + 0.04 * _fbm(rng, S, (2, 4, 8, 60), (1.0, 0.5, 0.25, 0.3))
    tone *= 1.0 - 0.03 * _furrows(rng, S, int(rng.integers(8, 14)), 0.08)
    redness = np.clip(_noise(rng, S, 5), 0, None) * np.float32(0.02)
    bg = np.empty((S, S, 3), np.uint8)
    for i, red_gain in enumerate((0.0, 1.0, 0.6)):
        bg[..., i] = np.clip((skin[i] * 255) * tone - (red_gain * 255) * redness + 0.5, 0, 255)
    photo = Image.fromarray(bg)

    # the lesion: re-photographed with small rotation, scale and position changes
    if jitter > 0:
        angle = jitter * rng.normal(0, 0.25)
        scale = float(np.exp(jitter * rng.normal(0, 0.06)))
        shift = (float(jitter * rng.normal(0, 0.04) * S), float(jitter * rng.normal(0, 0.04) * S))
        layer = _place(lesion.layer, angle, scale, shift)
        photo.paste(layer, (0, 0), layer)
    else:
        dx, dy = (int(round(v)) for v in rng.normal(0, 0.03 * S, 2))
        photo.paste(lesion.layer, (dx, dy), lesion.layer)

    # hairs
    hair = _draw_hairs(rng, S, int(rng.poisson(lesion.hairiness)))
    if hair is not None:
        tint = rng.uniform(0.7, 1.5)
        photo.paste(tuple(int(v * tint) for v in (31, 20, 15)), (0, 0), hair)

    # lighting (exposure, white balance, uneven illumination) and the dermoscope's
    # circular field of view (dark corners), in one pass
    light = (rng.uniform(0.9, 1.07) * rng.uniform(0.96, 1.04, 3)).astype(np.float32)
    t = rng.uniform(0, 2 * np.pi)
    gx = np.float32(np.cos(t)) * ax[None, :] + np.float32(np.sin(t)) * ax[:, None]
    rr = np.sqrt(ax[None, :] ** 2 + ax[:, None] ** 2)
    illum = 1.0 + np.float32(rng.uniform(0, 0.12)) * gx - np.float32(rng.uniform(0.1, 0.3)) * rr * rr
    field = np.float32(rng.uniform(0.54, 0.64))
    edge = np.float32(rng.uniform(0.02, 0.06))
    vig = _smoothstep((rr - field) / edge + 0.5)
    grain = rng.random((S, S), dtype=np.float32)                    # sensor noise, luminance only
    add = np.float32(0.045 * 255) * vig * (0.8 + 0.4 * grain) + np.float32(6.0) * (grain - 0.5)
    gain = illum * (1.0 - vig)
    img = np.asarray(photo, dtype=np.float32)
    out = np.empty((S, S, 3), np.uint8)
    for i in range(3):
        out[..., i] = np.clip(img[..., i] * (gain * light[i]) + (add + 0.5), 0, 255)
    return Image.fromarray(out)


def render_lesion(label: str, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """Draw one synthetic dermoscopy-like image of class ``label``.

    Args:
        label: one of :data:`SYNTHETIC_CLASSES` (``akiec``, ``bcc``, ``bkl``, ``df``,
            ``mel``, ``nv``, ``vasc``).
        rng: the random generator; the same generator state gives the same image.
        size: side of the square image, px.

    Returns:
        An RGB :class:`PIL.Image.Image` of ``size`` x ``size`` px.

    Raises:
        ValueError: ``label`` is not a supported class.
    """
    _check_label(label)
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    lesion = _sample_lesion(label, rng, int(size))
    return _photograph(lesion, rng, jitter=0.0)


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------
_SITES = ("back", "trunk", "lower extremity", "upper extremity", "abdomen", "chest",
          "face", "scalp", "neck", "ear", "hand", "foot")
_SITE_WEIGHTS: dict[str, tuple[float, ...]] = {
    #         back trunk lowx upx  abd  chest face scalp neck ear  hand foot
    "mel":   (0.28, 0.12, 0.20, 0.12, 0.05, 0.06, 0.08, 0.03, 0.03, 0.01, 0.01, 0.01),
    "nv":    (0.25, 0.20, 0.18, 0.10, 0.12, 0.07, 0.02, 0.01, 0.02, 0.00, 0.01, 0.02),
    "bkl":   (0.18, 0.14, 0.12, 0.10, 0.06, 0.10, 0.20, 0.04, 0.04, 0.01, 0.01, 0.00),
    "bcc":   (0.14, 0.08, 0.06, 0.06, 0.03, 0.07, 0.35, 0.06, 0.08, 0.06, 0.01, 0.00),
    "vasc":  (0.12, 0.22, 0.20, 0.12, 0.12, 0.08, 0.06, 0.02, 0.02, 0.00, 0.02, 0.02),
    "df":    (0.06, 0.08, 0.55, 0.20, 0.04, 0.03, 0.01, 0.00, 0.01, 0.00, 0.01, 0.01),
    "akiec": (0.06, 0.03, 0.08, 0.14, 0.01, 0.05, 0.42, 0.10, 0.04, 0.05, 0.02, 0.00),
}
_AGE = {  # mean, sd in years
    "mel": (60, 15), "nv": (42, 15), "bkl": (63, 13), "bcc": (67, 12),
    "vasc": (48, 20), "df": (44, 13), "akiec": (69, 10),
}
_P_MALE = {"mel": 0.56, "nv": 0.50, "bkl": 0.54, "bcc": 0.60, "vasc": 0.48, "df": 0.42, "akiec": 0.66}


def _class_counts(classes: Sequence[str], n: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of class names, not a single string")
    classes = list(dict.fromkeys(classes))
    if not classes:
        raise ValueError("classes is empty")
    for c in classes:
        _check_label(c)
    if isinstance(n, Mapping):
        extra = sorted(set(n) - set(classes))
        missing = [c for c in classes if c not in n]
        if extra or missing:
            raise ValueError(f"n_lesions_per_class must give a count for exactly the classes "
                             f"{classes}; missing {missing}, unexpected {extra}")
        counts = {c: n[c] for c in classes}
    else:
        counts = {c: n for c in classes}
    for c, k in counts.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"number of lesions for class {c!r} must be an integer >= 0, got {k!r}")
    return {c: int(k) for c, k in counts.items()}


def make_synthetic_dataset(
    dest: str | Path,
    n_lesions_per_class: int | Mapping[str, int] = 12,
    images_per_lesion: tuple[int, int] = (1, 3),
    classes: Sequence[str] = DEFAULT_CLASSES,
    size: int = 224,
    seed: int = 0,
) -> Path:
    """Write a small synthetic dermoscopy dataset and return the path of its manifest.

    Layout::

        dest/README.txt            says the data are synthetic, not for clinical judgement
        dest/manifest.csv          image_id,path,label,lesion_id,patient_id,age,sex,site,label_source
        dest/images/SYN_0000001.jpg ...

    ``path`` is relative to ``dest``. Each lesion (``SYNL_00001``...) gets a number of
    images drawn uniformly from ``images_per_lesion`` (inclusive); its images are the same
    lesion re-photographed (small changes of rotation, scale, lighting and hairs). A
    patient (``SYNP_00001``...) has one or two lesions. Age (years, multiples of 5), sex
    and site are made up, loosely class-dependent; ``label_source`` is ``synthetic``.

    Args:
        dest: output folder (created if needed). Files outside it are never touched; an
            existing manifest is overwritten and stale ``images/SYN_*.jpg`` files removed.
        n_lesions_per_class: lesions per class, one number or ``{class: count}`` covering
            every class in ``classes``.
        images_per_lesion: ``(min, max)`` images per lesion, ``1 <= min <= max``.
        classes: classes to draw, from :data:`SYNTHETIC_CLASSES`.
        size: image side, px.
        seed: random seed; the same seed gives byte-identical files.

    Returns:
        ``dest / "manifest.csv"``.
    """
    counts = _class_counts(classes, n_lesions_per_class)
    lo, hi = (int(v) for v in images_per_lesion)
    if not 1 <= lo <= hi:
        raise ValueError("images_per_lesion must be (min, max) with 1 <= min <= max, "
                         f"got {images_per_lesion}")
    size = int(size)
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")

    dest = Path(dest)
    img_dir = dest / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    labels = [c for c in counts for _ in range(counts[c])]
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]

    rows: list[dict[str, object]] = []
    written: set[str] = set()
    patient: dict[str, object] = {}
    lesions_left = 0
    n_patients = 0
    for lesion_no, label in enumerate(labels, start=1):
        if lesions_left == 0:  # a new patient with one or two lesions
            n_patients += 1
            lesions_left = 2 if rng.uniform() < 0.3 else 1
            mean, sd = _AGE[label]
            patient = {
                "patient_id": f"SYNP_{n_patients:05d}",
                "age": int(5 * round(float(np.clip(rng.normal(mean, sd), 5, 90)) / 5)),
                "sex": "male" if rng.uniform() < _P_MALE[label] else "female",
                "skin": _sample_skin(rng),
            }
        lesions_left -= 1
        site_p = np.asarray(_SITE_WEIGHTS[label])
        site = _SITES[int(rng.choice(len(_SITES), p=site_p / site_p.sum()))]
        lesion_rng = np.random.default_rng(rng.integers(2 ** 63))
        lesion = _sample_lesion(label, lesion_rng, size, skin=patient["skin"])
        for _ in range(int(rng.integers(lo, hi + 1))):
            image_id = f"SYN_{len(rows) + 1:07d}"
            view_rng = np.random.default_rng(rng.integers(2 ** 63))
            img = _photograph(lesion, view_rng, jitter=0.5)
            fname = f"{image_id}.jpg"
            img.save(img_dir / fname, format="JPEG", quality=_JPEG_QUALITY)
            written.add(fname)
            rows.append({
                "image_id": image_id, "path": f"images/{fname}", "label": label,
                "lesion_id": f"SYNL_{lesion_no:05d}", "patient_id": patient["patient_id"],
                "age": patient["age"], "sex": patient["sex"], "site": site,
                "label_source": "synthetic",
            })

    for old in img_dir.iterdir():  # stale images of an earlier, larger run
        if _IMAGE_ID_RE.match(old.name) and old.name not in written and old.is_file():
            old.unlink()

    manifest = dest / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (dest / "README.txt").write_text(README_TEXT, encoding="utf-8")
    return manifest

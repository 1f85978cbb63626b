"""Synthetic, dermoscopy-like skin-lesion images for demos and tests.

The images are procedurally drawn cartoons of the ABCD-rule look of seven HAM10000
classes (``akiec``, ``bcc``, ``bkl``, ``df``, ``mel``, ``nv``, ``vasc``). They are
**synthetic**: no real patient is depicted, and a model's accuracy on them says nothing
about clinical performance. They exist so that ``dermlearn demo`` runs end to end on a
fresh machine with no downloaded data, and so that training on them is learnable.

Rendering is vectorised numpy plus a few Pillow drawing calls; a 224 px image takes a
few milliseconds. Everything is deterministic given a :class:`numpy.random.Generator`
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
    "blue_white": (0.62, 0.68, 0.78),
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
def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise, shape (size, size), zero mean and unit std; ``cells`` sets the scale."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32)
    field = field - field.mean()
    return field / (field.std() + 1e-6)


def _fbm(rng: np.random.Generator, size: int, cells: Sequence[int] = (3, 6, 12),
         gains: Sequence[float] = (1.0, 0.5, 0.25)) -> np.ndarray:
    """Sum of noise octaves, shape (size, size), unit std."""
    field = sum(g * _noise(rng, size, c) for c, g in zip(cells, gains))
    return field / (field.std() + 1e-6)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blend(canvas: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> None:
    """In place: ``canvas += (colour - canvas) * weight``; canvas (H, W, 3), weight (H, W)."""
    canvas += (colour - canvas) * weight[..., None]


def _network(size: int, rng: np.random.Generator, period: float, width: float,
             warp: float) -> np.ndarray:
    """A warped honeycomb-like line grid in [0, 1], shape (size, size); ``period`` in px."""
    ax = np.arange(size, dtype=np.float32) - (size - 1) / 2
    beta = rng.uniform(0, np.pi)
    cb, sb = np.float32(np.cos(beta)), np.float32(np.sin(beta))
    k = np.float32(np.pi / period)
    a = (ax[None, :] * cb + ax[:, None] * sb) * k + warp * _noise(rng, size, 7)
    b = (-ax[None, :] * sb + ax[:, None] * cb) * k + warp * _noise(rng, size, 7)
    la = np.exp(-np.sin(a) ** 2 / width)
    lb = np.exp(-np.sin(b) ** 2 / width)
    return 1.0 - (1.0 - la) * (1.0 - lb)


def _draw_dots(size: int, centres: np.ndarray, radii: np.ndarray, blur: float = 0.0,
               aspect: np.ndarray | None = None) -> np.ndarray:
    """Filled ellipses on a float mask in [0, 1], shape (size, size); centres/radii in px."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if aspect is None:
        aspect = np.ones(len(radii))
    for (x, y), r, e in zip(centres, radii, aspect):
        rx, ry = r * e, r / e
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask, dtype=np.float32) / 255.0


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
# the lesion layer (canonical frame: centred, unrotated)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """Class-dependent shape parameters; radii as fractions of the image size."""

    radius: tuple[float, float]        # mean radius R0 / size
    aspect: tuple[float, float]        # ellipse elongation
    low: float                         # amplitude of harmonics 2-3 (asymmetry)
    high: float                        # amplitude of harmonics 4-12 (border irregularity)
    notches: tuple[int, int]           # number of notches cut into the border
    rough: float                       # fractal border noise, fraction of R0
    soft: tuple[float, float]          # edge softness, fraction of R0
    opacity: tuple[float, float]       # maximum alpha


_SHAPES: dict[str, _Shape] = {
    "mel":   _Shape((0.27, 0.36), (1.0, 1.45), 0.11, 0.035, (2, 5), 0.08, (0.03, 0.16), (0.95, 1.0)),
    "nv":    _Shape((0.13, 0.21), (1.0, 1.2), 0.02, 0.006, (0, 0), 0.012, (0.05, 0.10), (0.88, 0.98)),
    "bkl":   _Shape((0.18, 0.28), (1.05, 1.45), 0.05, 0.012, (0, 1), 0.03, (0.015, 0.035), (0.9, 0.98)),
    "bcc":   _Shape((0.15, 0.26), (1.0, 1.35), 0.06, 0.02, (0, 2), 0.05, (0.06, 0.12), (0.55, 0.75)),
    "vasc":  _Shape((0.10, 0.18), (1.0, 1.3), 0.05, 0.02, (0, 1), 0.02, (0.02, 0.04), (0.95, 1.0)),
    "df":    _Shape((0.10, 0.15), (1.0, 1.3), 0.03, 0.01, (0, 0), 0.03, (0.18, 0.28), (0.75, 0.9)),
    "akiec": _Shape((0.19, 0.30), (1.0, 1.5), 0.08, 0.03, (0, 2), 0.07, (0.12, 0.22), (0.75, 0.9)),
}


@dataclass
class _Ctx:
    """Coordinates of the canonical lesion canvas; all arrays (S, S)."""

    rng: np.random.Generator
    size: int
    centre: float
    r0: float          # mean lesion radius, px
    d: np.ndarray      # normalised radius: 0 at the centre, 1 on the border
    theta: np.ndarray  # polar angle, radians


def _lesion_geometry(label: str, rng: np.random.Generator, size: int) -> tuple[_Ctx, np.ndarray, float]:
    """Sample a border r(theta) and return the context, the alpha mask (S, S) and max opacity."""
    sp = _SHAPES[label]
    r0 = rng.uniform(*sp.radius) * size
    e = np.sqrt(rng.uniform(*sp.aspect))
    c = (size - 1) / 2
    ax = np.arange(size, dtype=np.float32) - c
    u = ax[None, :] / e
    v = ax[:, None] * e
    rr = np.sqrt(u * u + v * v)
    th = np.arctan2(v, u)

    rad = np.ones_like(th)
    for k in (1, 2, 3):
        rad += sp.low * rng.uniform(0.3, 1.0) / k ** 0.5 * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    for k in range(4, 13):
        rad += sp.high * rng.uniform(0, 1.0) * 3 / k * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    for _ in range(rng.integers(sp.notches[0], sp.notches[1] + 1)):
        dt = np.angle(np.exp(1j * (th - rng.uniform(0, 2 * np.pi))))
        rad -= rng.uniform(0.08, 0.2) * np.exp(-0.5 * (dt / rng.uniform(0.06, 0.18)) ** 2)
    rad = np.minimum(rad * r0, 0.47 * size)

    d = rr / rad + sp.rough * _fbm(rng, size, (4, 9, 18))
    soft = rng.uniform(*sp.soft)
    if label == "mel":  # partly abrupt, partly fading border
        soft = soft * (1.0 + 0.8 * np.cos(th - rng.uniform(0, 2 * np.pi)))
    alpha = _smoothstep((1.0 - d) / (2 * soft) + 0.5).astype(np.float32)
    ctx = _Ctx(rng=rng, size=size, centre=c, r0=float(r0), d=d.astype(np.float32),
               theta=th.astype(np.float32))
    return ctx, alpha, float(rng.uniform(*sp.opacity))


def _paint_mel(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    names = ["dark_brown", "mid_brown"]
    names += list(rng.choice(["black", "blue_grey", "red", "light_brown", "blue_white", "white"],
                             size=rng.integers(2, 5), replace=False, p=[.26, .22, .16, .16, .12, .08]))
    cols = np.stack([_col(n) for n in names])                       # (K, 3)
    ax = (np.arange(S, dtype=np.float32) - ctx.centre) / ctx.r0
    logits = []
    for i in range(len(names)):
        t = rng.uniform(0, 2 * np.pi)  # asymmetric drift: each colour piles up on one side
        drift = 0.7 * (np.cos(t) * ax[None, :] + np.sin(t) * ax[:, None])
        logits.append(_fbm(rng, S, (3, 6, 12)) + drift + rng.normal(0, 0.4))
    w = np.stack(logits) / 0.25
    w = np.exp(w - w.max(axis=0, keepdims=True))
    w /= w.sum(axis=0, keepdims=True)
    img = np.tensordot(w, cols, axes=(0, 0)).astype(np.float32)     # (S, S, 3)
    # atypical network over part of the lesion, thick and irregular
    net = _network(S, rng, period=rng.uniform(0.028, 0.045) * S, width=0.12, warp=1.6)
    region = _smoothstep(_noise(rng, S, 4) * 1.2 + 0.3)
    img *= (1.0 - 0.45 * net * region)[..., None]
    # irregular dots and globules, clustered on one side of the periphery
    t0 = rng.uniform(0, 2 * np.pi)
    n = int(rng.integers(10, 30))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.45, 0.95, (t0, t0 + rng.uniform(1.5, 3.5)))
    dots = _draw_dots(S, pts, rng.uniform(0.008, 0.022, n) * S, blur=0.8,
                      aspect=rng.uniform(0.7, 1.4, n))
    _blend(img, _col("black") * 1.4, 0.85 * dots)
    img *= (1.0 + 0.05 * _noise(rng, S, 40))[..., None]
    return img


def _paint_nv(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * _col("light_brown") + t * _col("mid_brown")
    grad = rng.uniform(-0.25, 0.2)  # >0: darker centre
    shade = 1.0 - grad * (1.0 - np.clip(ctx.d, 0, 1)) + 0.04 * _fbm(rng, S, (3, 6))
    img = base[None, None, :] * shade[..., None]
    kind = rng.choice(["reticular", "globular", "homogeneous"], p=[0.55, 0.25, 0.20])
    fade = 1.0 - _smoothstep((ctx.d - 0.55) / 0.45)  # pattern thins out towards the border
    if kind == "reticular":
        net = _network(S, rng, period=rng.uniform(0.022, 0.032) * S, width=0.18, warp=0.35)
        img *= (1.0 - rng.uniform(0.25, 0.4) * net * fade)[..., None]
    elif kind == "globular":
        pts = _jittered_grid(rng, S, rng.uniform(0.035, 0.05) * S, 0.15)
        keep = np.hypot(pts[:, 0] - ctx.centre, pts[:, 1] - ctx.centre) < 0.85 * ctx.r0
        pts = pts[keep]
        glob = _draw_dots(S, pts, rng.uniform(0.009, 0.014, len(pts)) * S, blur=0.9)
        _blend(img, _col("dark_brown"), 0.55 * glob * fade)
    return img


def _paint_bkl(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * _col("tan") + t * _col("light_brown")
    img = base[None, None, :] * (1.0 + 0.07 * _fbm(rng, S, (4, 8)))[..., None]
    # cerebriform "stuck-on" surface: dark fissures between light waxy ridges
    band = _noise(rng, S, int(rng.integers(10, 16))) + 0.4 * _noise(rng, S, 22)
    fissure = np.exp(-(band / 0.22) ** 2)
    ridge = _smoothstep(band * 0.8)
    img *= (1.0 - 0.38 * fissure + 0.08 * ridge)[..., None]
    # milia-like cysts (white-yellow dots) and comedo-like openings (dark plugs)
    n = int(rng.integers(5, 16))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.8)
    milia = _draw_dots(S, pts, rng.uniform(0.008, 0.018, n) * S, blur=1.2)
    _blend(img, _col("ivory"), 0.9 * milia)
    n = int(rng.integers(3, 10))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.85)
    comedo = _draw_dots(S, pts, rng.uniform(0.006, 0.013, n) * S, blur=0.7,
                        aspect=rng.uniform(0.6, 1.6, n))
    _blend(img, _col("dark_brown"), 0.8 * comedo)
    # waxy sheen
    img = img * 0.9 + 0.1 * np.float32(0.9)
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

    for _ in range(int(rng.integers(2, 5))):
        x, y = _points_in_lesion(rng, 1, centre, r0, 0.1, 0.6)[0]
        ang = np.arctan2(y - centre, x - centre) + rng.normal(0, 0.6)  # grow outwards
        branch(x, y, ang, r0 * rng.uniform(0.35, 0.55), rng.uniform(2.2, 3.4) * scale, 3)
    mask = mask.filter(ImageFilter.GaussianBlur(0.6 * scale))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _paint_bcc(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * _col("pink") + t * _col("pearl")
    img = base[None, None, :] * (1.0 + 0.04 * _fbm(rng, S, (4, 8)))[..., None]
    # shiny white areas
    shine = _smoothstep(_noise(rng, S, 6) - 0.8)
    _blend(img, _col("white"), 0.6 * shine)
    # blue-grey ovoid nests
    n = int(rng.integers(1, 6))
    pts = _points_in_lesion(rng, n, ctx.centre, ctx.r0, 0.0, 0.7)
    nests = _draw_dots(S, pts, rng.uniform(0.02, 0.05, n) * S, blur=1.8,
                       aspect=rng.uniform(0.6, 1.6, n))
    _blend(img, _col("blue_grey"), nests)
    alpha += (1.0 - alpha) * 0.9 * nests * (ctx.d < 1.0)
    # ulceration / crust, sometimes
    if rng.uniform() < 0.35:
        pts = _points_in_lesion(rng, 1, ctx.centre, ctx.r0, 0.0, 0.4)
        ulc = _draw_dots(S, pts, rng.uniform(0.03, 0.06, 1) * S, blur=2.0,
                         aspect=rng.uniform(0.7, 1.4, 1))
        ulc *= _smoothstep(_noise(rng, S, 12) + 1.0)
        _blend(img, np.array((0.45, 0.14, 0.10), np.float32), ulc)
        alpha += (1.0 - alpha) * ulc
    # arborizing telangiectasia: in focus, bright red, opaque
    ves = _draw_vessels(rng, S, ctx.centre, ctx.r0) * _smoothstep((1.1 - ctx.d) / 0.2)
    _blend(img, _col("bright_red"), ves)
    alpha += (1.0 - alpha) * 0.95 * ves
    return img


def _paint_vasc(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    septa = np.array((0.86, 0.56, 0.58), np.float32)
    img = np.broadcast_to(septa, (S, S, 3)).copy()
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
    img *= (1.0 + 0.05 * _fbm(rng, S, (5, 10)))[..., None]
    if rng.uniform() < 0.4:  # whitish veil
        _blend(img, _col("white"), 0.25 * _smoothstep(_noise(rng, S, 4)))
    return img


def _paint_df(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * _col("light_brown") + t * np.array((0.80, 0.55, 0.48), np.float32)
    img = base[None, None, :] * (1.0 + 0.04 * _fbm(rng, S, (4, 8)))[..., None]
    # faint, delicate peripheral network
    net = _network(S, rng, period=rng.uniform(0.02, 0.028) * S, width=0.2, warp=0.4)
    ring = _smoothstep((ctx.d - 0.35) / 0.3) * (1.0 - _smoothstep((ctx.d - 0.9) / 0.3))
    img *= (1.0 - 0.3 * net * ring)[..., None]
    # central white scar-like patch, irregular
    dc = ctx.d / rng.uniform(0.4, 0.6) + 0.25 * _fbm(rng, S, (5, 10))
    scar = _smoothstep((1.0 - dc) / 0.35)
    _blend(img, _col("white"), 0.95 * scar)
    # scar is opaque, halo fades into the skin
    alpha *= 0.55 + 0.45 * (1.0 - _smoothstep((ctx.d - 0.4) / 0.6))
    alpha += (1.0 - alpha) * scar
    return img


def _paint_akiec(ctx: _Ctx, alpha: np.ndarray) -> np.ndarray:
    rng, S = ctx.rng, ctx.size
    t = rng.uniform(0, 1)
    base = (1 - t) * np.array((0.90, 0.50, 0.48), np.float32) + t * np.array((0.80, 0.36, 0.37), np.float32)
    img = base[None, None, :] * (1.0 + 0.08 * _fbm(rng, S, (6, 14, 30)))[..., None]
    # strawberry pattern: red pseudo-network around white-yellow follicular openings
    spacing = rng.uniform(0.035, 0.05) * S
    pts = _jittered_grid(rng, S, spacing, 0.2)
    pts = pts[np.hypot(pts[:, 0] - ctx.centre, pts[:, 1] - ctx.centre) < 1.1 * ctx.r0]
    r = rng.uniform(0.16, 0.26, len(pts)) * spacing
    halo = _draw_dots(S, pts, r * 1.9, blur=1.5)
    foll = _draw_dots(S, pts, r, blur=0.8)
    _blend(img, np.array((0.93, 0.70, 0.65), np.float32), 0.55 * halo)
    _blend(img, _col("ivory"), 0.9 * foll)
    # rough white scale in patches
    scale = _smoothstep((_fbm(rng, S, (8, 16, 32)) - 0.5) / 0.6) * _smoothstep(_noise(rng, S, 5) + 0.6)
    _blend(img, _col("white"), 0.85 * scale)
    alpha += (1.0 - alpha) * 0.8 * scale * (ctx.d < 1.0)
    return img


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
    """The lesion alone, centred and unrotated, as RGBA (alpha = lesion coverage)."""
    ctx, alpha, opacity = _lesion_geometry(label, rng, size)
    img = _PAINTERS[label](ctx, alpha)
    # pigment looks darker on darker skin
    img = img * (skin / _SKIN_REF) ** 0.6
    rgba = np.empty((size, size, 4), dtype=np.uint8)
    rgba[..., :3] = np.clip(img * 255 + 0.5, 0, 255)
    rgba[..., 3] = np.clip(alpha * opacity * 255 + 0.5, 0, 255)
    return Image.fromarray(rgba)


# --------------------------------------------------------------------------------------
# one photograph of a lesion: placement, skin, hairs, lighting, dermoscope vignetting
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Lesion:
    """Everything that stays the same when one lesion is photographed again."""

    label: str
    layer: Image.Image     # RGBA, canonical frame
    skin: np.ndarray       # (3,) RGB in [0, 1]
    angle: float           # base orientation, radians
    hairiness: float       # expected number of hairs


def _sample_lesion(label: str, rng: np.random.Generator, size: int,
                   skin: np.ndarray | None = None) -> _Lesion:
    _check_label(label)
    skin = _sample_skin(rng) if skin is None else skin
    layer = _lesion_layer(label, rng, size, skin)
    hairiness = float(rng.choice([0.0, 2.0, 6.0, 14.0], p=[0.3, 0.3, 0.25, 0.15]))
    return _Lesion(label, layer, skin, float(rng.uniform(0, 2 * np.pi)), hairiness)


def _place(layer: Image.Image, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """Rotate (rad), scale and shift (px) the RGBA layer about its centre; float (S, S, 4) in [0, 1]."""
    S = layer.size[0]
    c = (S - 1) / 2
    ca, sa = np.cos(angle) / scale, np.sin(angle) / scale
    # output (x, y) -> input: c + R(-angle)/scale @ (p - c - shift)
    tx, ty = c + shift[0], c + shift[1]
    a, b = ca, sa
    d, e = -sa, ca
    coeffs = (a, b, c - a * tx - b * ty, d, e, c - d * tx - e * ty)
    out = layer.transform((S, S), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    return np.asarray(out, dtype=np.float32) / 255.0


def _draw_hairs(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``n`` dark curved hairs as a coverage mask (S, S) in [0, 1]."""
    mask = Image.new("L", (size, size), 0)
    if n == 0:
        return np.zeros((size, size), np.float32)
    draw = ImageDraw.Draw(mask)
    s = size / 224
    base_dir = rng.uniform(0, np.pi)
    tt = np.linspace(0, 1, 24)[:, None]
    for _ in range(n):
        p0 = rng.uniform(-0.1, 1.1, 2) * size
        ang = base_dir + rng.normal(0, 0.5)
        length = rng.uniform(0.3, 1.1) * size
        p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        bend = rng.normal(0, 0.18) * length
        p1 = (p0 + p2) / 2 + bend * np.array([-np.sin(ang), np.cos(ang)])
        pts = (1 - tt) ** 2 * p0 + 2 * (1 - tt) * tt * p1 + tt ** 2 * p2  # quadratic Bezier
        draw.line([tuple(p) for p in pts], fill=int(rng.integers(170, 256)),
                  width=max(1, int(round(rng.uniform(1.0, 3.2) * s))), joint="curve")
    mask = mask.filter(ImageFilter.GaussianBlur(0.5 * s))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _photograph(lesion: _Lesion, rng: np.random.Generator, jitter: float = 1.0) -> Image.Image:
    """One dermoscopic photograph of ``lesion``; ``jitter`` scales the view-to-view variation."""
    S = lesion.layer.size[0]
    c = (S - 1) / 2
    ax = np.arange(S, dtype=np.float32) - c

    # skin: tone with blotchy low-frequency variation, fine texture and skin lines
    skin = lesion.skin * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    tone = 1.0 + 0.035 * _fbm(rng, S, (2, 4, 8)) + 0.012 * _noise(rng, S, 60)
    redness = np.clip(0.5 * _noise(rng, S, 5), 0, None) * 0.04
    img = skin[None, None, :] * tone[..., None]
    img[..., 1] -= redness
    img[..., 2] -= redness * 0.6
    lines = _network(S, rng, period=rng.uniform(0.05, 0.09) * S, width=0.03, warp=0.8)
    img *= (1.0 - 0.035 * lines)[..., None]

    # the lesion, re-photographed: small rotation, scale and position changes
    angle = lesion.angle + jitter * rng.normal(0, 0.25)
    scale = float(np.exp(jitter * rng.normal(0, 0.06)))
    shift = tuple(jitter * rng.normal(0, 0.04, 2) * S)
    layer = _place(lesion.layer, angle, scale, shift)
    _blend(img, layer[..., :3], layer[..., 3])

    # hairs
    n_hairs = int(rng.poisson(lesion.hairiness))
    hair = _draw_hairs(rng, S, n_hairs)
    hair_col = np.array((0.12, 0.08, 0.06), np.float32) * rng.uniform(0.7, 1.5)
    _blend(img, hair_col, 0.9 * hair)

    # lighting: exposure, white balance, uneven illumination
    img *= (rng.uniform(0.9, 1.07) * rng.uniform(0.96, 1.04, 3)).astype(np.float32)
    t = rng.uniform(0, 2 * np.pi)
    gx = (np.cos(t) * ax[None, :] + np.sin(t) * ax[:, None]) / S
    rr = np.sqrt(ax[None, :] ** 2 + ax[:, None] ** 2) / S
    img *= (1.0 + rng.uniform(0, 0.12) * gx - rng.uniform(0.1, 0.3) * rr ** 2)[..., None]

    # dermoscope field of view: dark circular corners
    field = rng.uniform(0.56, 0.7) * S
    edge = rng.uniform(0.02, 0.06) * S
    vig = _smoothstep((rr * S - field) / edge + 0.5)
    dark = np.array((0.05, 0.04, 0.04), np.float32) * (1.0 + 0.3 * _noise(rng, S, 30))[..., None]
    img += (dark - img) * vig[..., None]

    img += rng.normal(0, 0.008, img.shape).astype(np.float32)  # sensor noise
    out = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(0.45 * S / 224))


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
    return _photograph(lesion, rng, jitter=1.0)


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
        raise ValueError(f"images_per_lesion must be (min, max) with 1 <= min <= max, got {images_per_lesion}")
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
        site = _SITES[int(rng.choice(len(_SITES), p=np.asarray(_SITE_WEIGHTS[label]) / sum(_SITE_WEIGHTS[label])))]
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

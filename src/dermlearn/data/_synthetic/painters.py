"""A synthetic lesion's colours and dermoscopic structures: one painter per HAM10000 class.

A painter takes the lesion's :class:`~dermlearn.data._synthetic.shape._Ctx` and alpha mask
(S, S) and returns the lesion's colour, (3, S, S) RGB in [0, 1]; it may raise alpha in place.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dermlearn.data._synthetic.draw import (
    _blend,
    _col,
    _draw_dots,
    _fbm,
    _furrows,
    _jittered_grid,
    _network,
    _noise,
    _points_in_lesion,
    _smoothstep,
)
from dermlearn.data._synthetic.shape import _Ctx

#: Every class :func:`~dermlearn.data.synthetic.render_lesion` can draw (HAM10000 codes).
SYNTHETIC_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


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

"""One dermoscopic photograph of a synthetic lesion: skin, placement, hairs, lighting, vignetting.

:func:`_sample_lesion` draws what stays fixed across photographs of one lesion (its RGBA
layer, the skin tone, how hairy the site is); :func:`_photograph` takes one picture of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from dermlearn.data._synthetic.draw import (
    _SKIN_ANCHORS,
    _SKIN_REF,
    _SKIN_WEIGHTS,
    _fbm,
    _furrows,
    _noise,
    _smoothstep,
)
from dermlearn.data._synthetic.painters import _PAINTERS, _check_label
from dermlearn.data._synthetic.shape import _lesion_geometry


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

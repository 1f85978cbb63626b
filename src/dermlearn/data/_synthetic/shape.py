"""A synthetic lesion's outline: class-dependent size, asymmetry and border, as an alpha mask.

The lesion is drawn centred in its own (S, S) frame; :func:`_lesion_geometry` returns the
:class:`_Ctx` the painters work in, the alpha mask (S, S) in [0, 1] and the maximum opacity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dermlearn.data._synthetic.draw import _fbm, _smoothstep


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

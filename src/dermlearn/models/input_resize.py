"""Resizing a preprocessed batch inside a network, so that ensemble members trained with
different input sizes and crops read one input.

An ensemble reads each image once (:func:`ensemble_input`: a preprocessing that keeps every
part of the photograph its members keep, at the finest of their resolutions); a member trained
with another size or centre crop takes its own part of that batch and resizes it to its own
size first (:class:`InputResize`). The crop and resize are linear and separable,
``y = R @ x @ C`` with fixed matrices (:func:`crop_resize_matrix`: antialiased bicubic
weights, as PIL's and torchvision's antialiased resize use), so they are two matrix products:
the same in PyTorch, under autograd (saliency, Grad-CAM) and in an exported ONNX graph, where
opset 17 has no antialiased Resize.

Which part of the ensemble's input a member keeps depends on the photograph's aspect ratio
when the crops differ in shape (a square centre crop of a 4:3 photograph against its whole
frame): it is computed for a reference photograph size (the training photographs' median,
stored with the ensemble) and is exact for photographs of that aspect ratio. When members
differ only in size (one aspect ratio and crop) it is exact for every photograph.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dermlearn.models.errors import ModelError
from dermlearn.models.preprocessing import PreprocessConfig

__all__ = ["InputResize", "crop_resize_matrix", "ensemble_input", "input_box", "photo_scale",
           "photometric_mismatch", "resize_matrix"]

Box = tuple[float, float, float, float]


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float32 matrix ``A`` of a 1-D antialiased bicubic resize from ``n_in`` to
    ``n_out`` samples: ``A @ v`` resizes a signal ``v`` of length ``n_in``. Rows sum to 1; the
    identity when ``n_in == n_out``."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize sizes must be >= 1, got {n_in} -> {n_out}")
    if n_in == n_out:
        return torch.eye(n_in)
    # Column j of A is the resized unit vector e_j: resize the identity along one axis only
    # (the other keeps its size, where the bicubic kernel is the identity).
    eye = torch.eye(n_in, dtype=torch.float64).reshape(1, 1, n_in, n_in)
    resized = F.interpolate(eye, size=(n_out, n_in), mode="bicubic", align_corners=False,
                            antialias=True)
    return resized[0, 0].float()


def _span(n_in: int, start: float, length: float) -> tuple[int, int]:
    """The whole pixels [a, b) of ``[start, start + length)`` (rounded to the nearest edge)."""
    a, b = round(start), round(start + length)
    if a < 0 or b > n_in or b <= a:
        raise ValueError(f"crop [{start:g}, {start + length:g}) is not inside 0..{n_in}")
    return a, b


def crop_resize_matrix(n_in: int, n_out: int, start: float = 0.0,
                       length: float | None = None) -> torch.Tensor:
    """(n_out, n_in): keep samples ``[start, start + length)`` of ``n_in`` (edges rounded to
    whole pixels) and resize them to ``n_out`` (:func:`resize_matrix`)."""
    a, b = _span(n_in, start, n_in - start if length is None else length)
    matrix = torch.zeros(n_out, n_in)
    matrix[:, a:b] = resize_matrix(b - a, n_out)
    return matrix


def photo_scale(pre: PreprocessConfig, photo_hw: Sequence[float]) -> float:
    """Input pixels per photograph pixel for a photograph of ``photo_hw`` (H, W): timm's
    centre-crop eval transform resizes it, keeping its aspect ratio, to cover
    ``floor(H / crop_pct) x floor(W / crop_pct)`` and keeps the centre ``H x W``."""
    (h, w), c = pre.image_size, pre.crop_pct
    return max(math.floor(h / c) / photo_hw[0], math.floor(w / c) / photo_hw[1])


def input_box(source: PreprocessConfig, target: PreprocessConfig,
              photo_hw: Sequence[float]) -> Box:
    """(top, left, height, width), in ``source``'s input pixels, of the part of a photograph of
    ``photo_hw`` (H, W) that ``target``'s preprocessing keeps (both are centred)."""
    ratio = photo_scale(source, photo_hw) / photo_scale(target, photo_hw)
    height, width = target.image_size[0] * ratio, target.image_size[1] * ratio
    return ((source.image_size[0] - height) / 2, (source.image_size[1] - width) / 2,
            height, width)


def photometric_mismatch(a: PreprocessConfig, b: PreprocessConfig) -> str | None:
    """Why ``b``'s pixel values cannot be made from ``a``'s by cropping and resizing (None: they
    can): normalisation and colour constancy must agree."""
    for name in ("mean", "std", "color_constancy"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} {getattr(b, name)} against {getattr(a, name)}"
    return None


def ensemble_input(members: Sequence[PreprocessConfig], photo_hw: Sequence[float]
                   ) -> PreprocessConfig:
    """The preprocessing an ensemble reads images with: the member's that keeps the largest
    part of a ``photo_hw`` photograph, enlarged (same crop) to the finest member's resolution
    so that no member's input is upsampled. Raises ModelError naming the first member that
    cannot be made from it (other normalisation or colour constancy, or a crop that keeps a
    part of the photograph the widest member cuts away)."""
    regions = [(p.image_size[0] / photo_scale(p, photo_hw),
                p.image_size[1] / photo_scale(p, photo_hw)) for p in members]
    widest = max(range(len(members)), key=lambda i: regions[i][0] * regions[i][1])
    base = members[widest]
    for i, member in enumerate(members):
        why = photometric_mismatch(base, member)
        if why is None and (regions[i][0] > regions[widest][0] * 1.01
                            or regions[i][1] > regions[widest][1] * 1.01):
            why = (f"its crop keeps parts of the photograph that member {widest + 1}'s "
                   f"{base.image_size[0]}x{base.image_size[1]} crop cuts away")
        if why:
            raise ModelError(f"member {i + 1} cannot read member {widest + 1}'s input: {why}")
    finest = max(photo_scale(p, photo_hw) for p in members)
    factor = finest / photo_scale(base, photo_hw)
    if factor <= 1.0:
        return base
    h, w = base.image_size
    return PreprocessConfig(**{**base.to_dict(), "input_size": (3, math.ceil(h * factor),
                                                                math.ceil(w * factor))})


class InputResize(nn.Module):
    """(N, C, *size_in) -> (N, C, *size_out): keep ``box`` (top, left, height, width in input
    pixels; None: all of it) and resize it, antialiased bicubic, as two matrix products
    (``size_*`` = (H, W) in pixels). Holds no learned weights (its matrices are not saved with
    the model)."""

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int],
                 box: Box | None = None):
        super().__init__()
        self.size_in = (int(size_in[0]), int(size_in[1]))
        self.size_out = (int(size_out[0]), int(size_out[1]))
        top, left, height, width = box or (0.0, 0.0, *self.size_in)
        try:
            rows = crop_resize_matrix(self.size_in[0], self.size_out[0], top, height)
            cols = crop_resize_matrix(self.size_in[1], self.size_out[1], left, width)
        except ValueError as exc:
            raise ModelError(f"cannot take a {self.size_out[0]}x{self.size_out[1]} input from "
                             f"a {self.size_in[0]}x{self.size_in[1]} one: {exc}") from None
        self.rows_span = _span(self.size_in[0], top, height)
        self.cols_span = _span(self.size_in[1], left, width)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols.T.contiguous(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.size_in:
            raise ModelError(f"this ensemble member reads {self.size_in[0]}x{self.size_in[1]} "
                             f"inputs (resized inside to {self.size_out[0]}x"
                             f"{self.size_out[1]}); got {tuple(images.shape[-2:])}")
        out = torch.matmul(torch.matmul(self.rows.to(images.dtype), images),
                           self.cols.to(images.dtype))
        if images.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def place(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps (N, K, h, w) over this member's input -> (N, K, *size_in) over the ensemble's
        input: resized (bilinear) onto the kept part, zero outside it."""
        (a, b), (c, d) = self.rows_span, self.cols_span
        out = maps.new_zeros((*maps.shape[:2], *self.size_in))
        out[:, :, a:b, c:d] = F.interpolate(maps, size=(b - a, d - c), mode="bilinear",
                                            align_corners=False)
        return out

    def extra_repr(self) -> str:
        return (f"size_in={self.size_in}, size_out={self.size_out}, rows={self.rows_span}, "
                f"cols={self.cols_span}")

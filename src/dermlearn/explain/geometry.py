"""Where the network's input crop lies in the original photograph, and maps carried back to it.

dermlearn's eval transform (:func:`dermlearn.models.preprocessing.eval_transform`, timm's
"center" crop mode) resizes the photograph, keeping its aspect ratio, so that it covers
``(H / crop_pct, W / crop_pct)`` (for a square input: the shorter side becomes
``floor(H / crop_pct)``), then keeps the centre ``H x W`` pixels. A map computed on the network
input, shape (H, W), therefore covers only a centred window of the photograph, scaled by the
resize factor; :func:`to_original` pastes it there and resizes it to the photograph's size, and
every photograph pixel outside that window gets 0 (the network never saw it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dermlearn.models.preprocessing import PreprocessConfig

__all__ = ["CropGeometry", "crop_geometry", "to_original", "visible_region"]


@dataclass(frozen=True)
class CropGeometry:
    """The eval transform's geometry for one photograph; all sizes are (width, height) in pixels.

    ``resized``: the photograph's size after the aspect-preserving resize; ``offset``: the
    crop's top-left corner in resized pixels (negative when the transform pads); ``crop``: the
    network input's size.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    crop: tuple[int, int]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The crop window (left, top, right, bottom) in the original photograph's pixels."""
        sx = self.original[0] / self.resized[0]
        sy = self.original[1] / self.resized[1]
        left, top = self.offset
        return (left * sx, top * sy, (left + self.crop[0]) * sx, (top + self.crop[1]) * sy)


def crop_geometry(image_size: tuple[int, int], cfg: PreprocessConfig) -> CropGeometry:
    """The geometry of ``eval_transform(cfg)`` on a photograph of ``image_size`` = (width, height).

    Mirrors torchvision's shorter-side ``Resize`` (square inputs) or timm's ``ResizeKeepRatio``
    (non-square inputs), then torchvision's ``CenterCrop`` (which pads when the image is smaller).
    """
    width, height = (int(v) for v in image_size)
    crop_h, crop_w = cfg.image_size
    scale_h, scale_w = math.floor(crop_h / cfg.crop_pct), math.floor(crop_w / cfg.crop_pct)
    if scale_h == scale_w:  # torchvision Resize(int): shorter side -> scale, longer truncated
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = scale_h, int(scale_h * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    else:  # timm ResizeKeepRatio(longest=0): the smaller ratio wins
        ratio = min(height / scale_h, width / scale_w)
        new_h, new_w = round(height / ratio), round(width / ratio)
    left = _crop_start(new_w, crop_w)
    top = _crop_start(new_h, crop_h)
    return CropGeometry((width, height), (new_w, new_h), (left, top), (crop_w, crop_h))


def _crop_start(size: int, crop: int) -> int:
    """torchvision ``center_crop``'s first kept pixel along one axis (negative: padding)."""
    if crop > size:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)


def to_original(heatmap: np.ndarray, image_size: tuple[int, int],
                cfg: PreprocessConfig) -> np.ndarray:
    """A map on the network input, (H, W), carried back to the photograph: (height, width).

    The map is pasted at the crop's place in the resized photograph (zeros elsewhere), and that
    canvas is resized bilinearly to ``image_size`` = (width, height). Values stay within the
    input map's range. Returns float32.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    geo = crop_geometry(image_size, cfg)
    if heatmap.shape != (geo.crop[1], geo.crop[0]):
        raise ValueError(f"heatmap shape {heatmap.shape} is not the network input size "
                         f"{(geo.crop[1], geo.crop[0])}")
    canvas = np.zeros((geo.resized[1], geo.resized[0]), np.float32)
    _paste(canvas, heatmap, geo.offset)
    out = Image.fromarray(canvas, mode="F").resize(geo.original, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), heatmap.min(initial=0.0),
                   heatmap.max(initial=0.0))


def visible_region(image_size: tuple[int, int], cfg: PreprocessConfig) -> np.ndarray:
    """Boolean (height, width) mask of the photograph pixels whose centres fall in the crop."""
    geo = crop_geometry(image_size, cfg)
    left, top, right, bottom = geo.box
    xs = np.arange(geo.original[0]) + 0.5
    ys = np.arange(geo.original[1]) + 0.5
    return (((ys >= top) & (ys < bottom))[:, None] & ((xs >= left) & (xs < right))[None, :])


def _paste(canvas: np.ndarray, patch: np.ndarray, offset: tuple[int, int]) -> None:
    """Write ``patch`` into ``canvas`` with its top-left corner at ``offset`` = (x, y), clipped."""
    x, y = offset
    ch, cw = canvas.shape
    ph, pw = patch.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + pw, cw), min(y + ph, ch)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]

"""Image transforms for training: each recipe's augmentation, then the backbone's normalisation.

All transforms take a PIL RGB image and return a float tensor (3, H, W). Randomness comes from
Python's ``random`` and torch's global RNG, which :class:`~dermlearn.data.dataset.ImageDataset`
seeds per sample, so augmentations are reproducible and resumable.
"""
from __future__ import annotations

import math
import random

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from dermlearn.models.preprocessing import PreprocessConfig, color_steps, eval_transform

_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                  "nearest": T.InterpolationMode.NEAREST}


def inscribed_rectangle(width: float, height: float, angle_rad: float) -> tuple[float, float]:
    """Size (w, h) of the largest upright rectangle inside a ``width`` x ``height`` image
    rotated by ``angle_rad`` (Esteva et al.'s crop after a random rotation)."""
    if width <= 0 or height <= 0:
        return 0.0, 0.0
    sin_a, cos_a = abs(math.sin(angle_rad)), abs(math.cos(angle_rad))
    long_side, short_side = max(width, height), min(width, height)
    if short_side <= 2.0 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        # Constrained by the short side: the crop's corners touch the long sides.
        half = 0.5 * short_side
        w, h = (half / sin_a, half / cos_a) if width >= height else (half / cos_a, half / sin_a)
    else:
        cos_2a = cos_a * cos_a - sin_a * sin_a
        w = (width * cos_a - height * sin_a) / cos_2a
        h = (height * cos_a - width * sin_a) / cos_2a
    return w, h


class RotateInscribedCrop:
    """Rotate by a uniform random angle in [0, 360) and crop the largest upright rectangle."""

    def __call__(self, img: Image.Image) -> Image.Image:
        angle = random.uniform(0.0, 360.0)
        rotated = img.rotate(angle, resample=Image.BILINEAR, expand=True)
        w, h = inscribed_rectangle(img.width, img.height, math.radians(angle))
        cx, cy = rotated.width / 2.0, rotated.height / 2.0
        box = (int(math.ceil(cx - w / 2)), int(math.ceil(cy - h / 2)),
               int(math.floor(cx + w / 2)), int(math.floor(cy + h / 2)))
        return rotated.crop(box) if box[2] - box[0] >= 8 and box[3] - box[1] >= 8 else img

    def __repr__(self) -> str:
        return "RotateInscribedCrop(0-359 deg)"


class RandomRightAngle:
    """Rotate by 0, 90, 180 or 270 degrees (uniformly); with ``keep_orientation``, by 0 or 180
    only, so a landscape image stays landscape (for non-square inputs)."""

    def __init__(self, keep_orientation: bool = False):
        self.keep_orientation = keep_orientation

    def __call__(self, img: Image.Image) -> Image.Image:
        k = 2 * random.randrange(2) if self.keep_orientation else random.randrange(4)
        return img.rotate(90 * k, expand=True) if k else img

    def __repr__(self) -> str:
        return f"RandomRightAngle(keep_orientation={self.keep_orientation})"


class CoverCrop:
    """Scale (keeping the aspect ratio) until the image covers ``size`` = (H, W), then take the
    centre H x W: the evaluation crop's framing, so training never squashes a lesion that
    evaluation sees undistorted."""

    def __init__(self, size: tuple[int, int], interpolation=T.InterpolationMode.BICUBIC):
        self.size, self.interpolation = tuple(size), interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        (h, w), scale = self.size, max(self.size[0] / img.height, self.size[1] / img.width)
        covering = [max(h, round(img.height * scale)), max(w, round(img.width * scale))]
        return F.center_crop(F.resize(img, covering, interpolation=self.interpolation), [h, w])

    def __repr__(self) -> str:
        return f"CoverCrop(size={self.size})"


def _normalise(cfg: PreprocessConfig) -> list:
    return [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]


def train_transform(kind: str, cfg: PreprocessConfig) -> T.Compose:
    """The training augmentation ``kind`` (default | esteva | benedetti | none) at the
    config's input size, followed by its normalisation."""
    size = cfg.image_size  # (H, W)
    interpolation = _INTERPOLATION.get(cfg.interpolation, T.InterpolationMode.BICUBIC)
    if kind == "none":
        return eval_transform(cfg)
    # The papers resized to a square without keeping the aspect ratio, at training and test
    # time alike; evaluation here keeps it (the backbone's centre crop), so these recipes'
    # training crops keep it too (CoverCrop).
    if kind == "esteva":  # rotation 0-359 + largest inscribed rectangle, vertical flip p=0.5
        steps = [RotateInscribedCrop(), CoverCrop(size, interpolation), T.RandomVerticalFlip(0.5)]
    elif kind == "benedetti":  # flips, translations, rotations, shear
        steps = [CoverCrop(size, interpolation),
                 T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                 T.RandomAffine(degrees=45, translate=(0.1, 0.1), shear=10,
                                interpolation=T.InterpolationMode.BILINEAR)]
    elif kind == "default":
        # Dermoscopy has no "up": the 8 right-angle rotations/flips lose no pixels (4 of them
        # for a non-square input, which keep its orientation); a mild scale change keeps
        # training crops close to the evaluation crop, whose aspect (W / H) they share within
        # 0.8-1.25x; mild colour jitter.
        aspect = size[1] / size[0]
        steps = [RandomRightAngle(keep_orientation=size[0] != size[1]),
                 T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.8 * aspect, 1.25 * aspect),
                                     interpolation=interpolation),
                 T.RandomHorizontalFlip(),
                 T.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.1, hue=0.02)]
    else:
        raise ValueError(f"unknown augmentation {kind!r}")
    return T.Compose([*color_steps(cfg), *steps, *_normalise(cfg)])

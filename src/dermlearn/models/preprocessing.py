"""How images must be prepared for a backbone: size, crop, interpolation and normalisation.

The same :class:`PreprocessConfig` is stored with a trained model (``to_dict``, JSON-safe) and
used at inference time, in training code and in the web service alike.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from dermlearn.models.errors import PreprocessConfigError

__all__ = ["PreprocessConfig", "color_steps", "eval_transform", "preprocess"]

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise PreprocessConfigError(f"preprocess {name} must be 3 numbers, got {value!r}") from exc
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise PreprocessConfigError(f"preprocess {name} must be 3 finite numbers, got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class PreprocessConfig:
    """Eval-time preprocessing.

    ``input_size`` is (C, H, W) in pixels; ``mean``/``std`` are per RGB channel for pixels
    scaled to [0, 1]; ``interpolation`` is a PIL filter name; ``crop_pct`` is the centre crop
    fraction: the shorter side is resized to ``size / crop_pct`` and the centre ``H x W`` kept;
    ``color_constancy`` is the Minkowski norm p of Shades of Gray colour constancy applied to
    the photograph first (:mod:`dermlearn.models.color_constancy`; 6 as in the ISIC 2019
    winners' work), or None for none. The defaults are those of the bundled EfficientNet-Lite0
    weights.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    color_constancy: float | None = None

    def __post_init__(self) -> None:
        try:
            size = tuple(int(v) for v in self.input_size)
        except (TypeError, ValueError) as exc:
            raise PreprocessConfigError(f"preprocess input_size must be (C, H, W), "
                                        f"got {self.input_size!r}") from exc
        if len(size) != 3 or size[0] != 3 or min(size) < 1:
            raise PreprocessConfigError(f"preprocess input_size must be (3, H, W) with H, W >= 1, "
                                        f"got {self.input_size!r}")
        mean, std = _triple("mean", self.mean), _triple("std", self.std)
        if min(std) <= 0:
            raise PreprocessConfigError(f"preprocess std must be > 0, got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessConfigError(f"preprocess interpolation {self.interpolation!r} is not "
                                        f"one of {', '.join(INTERPOLATIONS)}")
        try:
            crop = float(self.crop_pct)
        except (TypeError, ValueError) as exc:
            raise PreprocessConfigError(f"preprocess crop_pct must be a number in (0, 1], "
                                        f"got {self.crop_pct!r}") from exc
        if not 0 < crop <= 1:
            raise PreprocessConfigError(f"preprocess crop_pct must be in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "crop_pct", crop)
        if self.color_constancy is not None:
            from dermlearn.models.color_constancy import check_norm

            object.__setattr__(self, "color_constancy", check_norm(self.color_constancy))

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the network input in pixels."""
        return self.input_size[1], self.input_size[2]

    @classmethod
    def from_model(cls, model: nn.Module) -> PreprocessConfig:
        """The preprocessing ``model``'s weights expect (timm ``resolve_data_config`` on its pretrained cfg)."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        interpolation = cfg.get("interpolation", "bicubic")
        if interpolation not in INTERPOLATIONS:  # e.g. "random" (a training-time option)
            interpolation = "bicubic"
        return cls(input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]),
                   std=tuple(cfg["std"]), interpolation=interpolation,
                   crop_pct=float(cfg.get("crop_pct") or 0.875))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists and plain numbers); ``color_constancy`` only when set, so a
        model without it is described (and content-addressed) as before it existed."""
        d = asdict(self)
        if d["color_constancy"] is None:
            del d["color_constancy"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; also accepts timm data-config dicts (``crop_mode='center'``)."""
        if not isinstance(data, Mapping):
            raise PreprocessConfigError(f"preprocess config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        if data.pop("crop_mode", "center") != "center":
            raise PreprocessConfigError("preprocess crop_mode must be 'center'")
        required = {"input_size", "mean", "std", "interpolation", "crop_pct"}
        known = required | {"color_constancy"}  # optional: configs saved before it had none
        extra = sorted(set(data) - known)
        if extra:
            raise PreprocessConfigError(f"preprocess config has unknown keys {extra}; expected "
                                        f"{sorted(known)}")
        missing = sorted(required - set(data))
        if missing:
            raise PreprocessConfigError(f"preprocess config lacks {missing}")
        return cls(**data)


class _ToRGB:
    """PIL image in any mode -> RGB (alpha dropped, greyscale replicated)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def color_steps(cfg: PreprocessConfig) -> list:
    """The photometric steps applied to the RGB photograph before any resizing: Shades of Gray
    colour constancy when the config asks for it (training and evaluation alike)."""
    if cfg.color_constancy is None:
        return []
    from dermlearn.models.color_constancy import ShadesOfGray

    return [ShadesOfGray(cfg.color_constancy)]


def eval_transform(cfg: PreprocessConfig) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> float32 tensor (3, H, W): to RGB, colour constancy (when configured),
    resize shorter side to size/crop_pct, centre crop H x W, scale to [0, 1], normalise by
    mean/std (timm's eval transform)."""
    from timm.data import create_transform
    from torchvision import transforms

    base = create_transform(input_size=cfg.input_size, is_training=False,
                            interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
                            crop_pct=cfg.crop_pct, crop_mode="center")
    steps = list(base.transforms) if isinstance(base, transforms.Compose) else [base]
    return transforms.Compose([_ToRGB(), *color_steps(cfg), *steps])


def preprocess(images: Sequence[Image.Image] | Image.Image, cfg: PreprocessConfig,
               transform: Callable[[Image.Image], torch.Tensor] | None = None) -> torch.Tensor:
    """A batch (N, 3, H, W) float32 from PIL images (a single image gives N = 1).

    Pass ``transform=eval_transform(cfg)`` to reuse one across calls.
    """
    if isinstance(images, Image.Image):
        images = [images]
    transform = transform or eval_transform(cfg)
    tensors = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"preprocess expects PIL images; item {i} is {type(image).__name__}")
        tensors.append(transform(image))
    if not tensors:
        return torch.empty((0, *cfg.input_size), dtype=torch.float32)
    return torch.stack(tensors).to(torch.float32)

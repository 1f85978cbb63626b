"""Errors raised by :mod:`dermlearn.models`; all derive from :class:`dermlearn.errors.DermlearnError`."""
from __future__ import annotations

from dermlearn.errors import DermlearnError


class ModelError(DermlearnError):
    """A model cannot be built as asked (unknown architecture, unsupported option)."""


class WeightsError(ModelError):
    """Pretrained weights cannot be found, read safely, or fitted to the model."""


class PreprocessConfigError(ModelError):
    """A stored preprocessing configuration is malformed."""

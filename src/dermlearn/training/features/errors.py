"""Errors of features mode: malformed features/targets/folds, an unusable feature cache."""
from __future__ import annotations

from dermlearn.errors import DermlearnError

__all__ = ["FeatureCacheError", "FeaturesError"]


class FeaturesError(DermlearnError):
    """Features, targets or folds given to a head are malformed."""


class FeatureCacheError(FeaturesError):
    """The feature cache cannot be used for this model, or its files are unusable."""


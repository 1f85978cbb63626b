"""Dihedral test-time views of an image batch: dermoscopy has no canonical orientation.

One list for every test-time-augmentation path (``predict --tta N``, the serving backends and
features-mode ``tta``): ``tta=N`` averages over the first N views of :data:`VIEWS`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from dermlearn.errors import DermlearnError

#: The eight symmetries of the square, in the order ``tta=N`` takes them.
VIEWS = ("identity", "hflip", "vflip", "rot180", "transpose", "rot90", "rot270", "transverse")

#: Views that swap height and width, so they need a square input.
SQUARE_ONLY = frozenset({"transpose", "rot90", "rot270", "transverse"})


def apply_view(batch: torch.Tensor, name: str) -> torch.Tensor:
    """The view ``name`` of an image batch (N, C, H, W)."""
    if name == "identity":
        return batch
    if name == "hflip":
        return batch.flip(-1)
    if name == "vflip":
        return batch.flip(-2)
    if name == "rot180":
        return batch.flip(-2).flip(-1)
    if name == "transpose":
        return batch.transpose(-2, -1)
    if name == "rot90":
        return batch.rot90(1, (-2, -1))
    if name == "rot270":
        return batch.rot90(3, (-2, -1))
    if name == "transverse":
        return batch.rot90(1, (-2, -1)).flip(-1)
    raise DermlearnError(f"unknown view {name!r}: use {', '.join(VIEWS)}")


def first_views(tta: int) -> tuple[str, ...]:
    """The first ``tta`` views of :data:`VIEWS` (1 <= tta <= 8)."""
    if not 1 <= int(tta) <= len(VIEWS):
        raise DermlearnError(f"tta must be between 1 and {len(VIEWS)} views, not {tta}")
    return VIEWS[:int(tta)]


def check_views(views: Sequence[str] | str, image_size: tuple[int, int]) -> tuple[str, ...]:
    """``views`` as a tuple, checked: known names, and a square ``image_size`` (H, W) for the
    views that swap height and width."""
    views = (views,) if isinstance(views, str) else tuple(views)
    if not views:
        raise DermlearnError("views must name at least one view (e.g. 'identity')")
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise DermlearnError(f"unknown view(s) {unknown}: use {', '.join(VIEWS)}")
    h, w = image_size
    swapped = sorted(set(views) & SQUARE_ONLY)
    if h != w and swapped:
        raise DermlearnError(f"view(s) {', '.join(swapped)} need a square input, not {h}x{w}")
    return views

"""What to score: image files, a folder of images, a dataset spec or a loaded Manifest, resolved to
unique image ids, file paths and (for a dataset) each image's age, sex and site.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from dermlearn.data import Manifest
from dermlearn.data.ids import unique_image_ids
from dermlearn.data.images import IMAGE_EXTENSIONS
from dermlearn.errors import DermlearnError
from dermlearn.models.lesion_classifier import METADATA_INPUTS

__all__ = ["Inputs", "ResolvedInputs", "resolve_inputs"]

#: What :func:`resolve_inputs` accepts.
Inputs = str | Path | Manifest | Sequence[str | Path]


class ResolvedInputs(NamedTuple):
    """Image ids (unique), file paths and, for a dataset, its ``age``/``sex``/``site`` table
    (N rows, in the same order; None for image files and folders)."""

    ids: list[str]
    paths: list[str]
    metadata: pd.DataFrame | None = None


def _from_manifest(manifest: Manifest, what: str) -> ResolvedInputs:
    missing = [p for p in manifest.problems if p.kind == "missing_file"]
    if missing:
        raise DermlearnError(f"{len(missing)} images of {what} are missing, e.g. "
                             f"{missing[0].message}")
    table = manifest.table
    return ResolvedInputs(table["image_id"].astype(str).tolist(),
                          table["path"].astype(str).tolist(),
                          table[list(METADATA_INPUTS)].reset_index(drop=True))


def resolve_inputs(inputs: Inputs) -> ResolvedInputs:
    """Ids, paths (and a dataset's metadata) from image files, a folder of images, one dataset
    spec (as :func:`dermlearn.data.load` reads it) or a Manifest.

    Ids of image files are their stems where those are unique, else their paths relative to
    the common folder (:func:`~dermlearn.data.ids.unique_image_ids`): two ``lesion1.jpg`` in
    different folders are two rows, never one id twice.
    """
    if isinstance(inputs, Manifest):
        return _from_manifest(inputs, inputs.source)
    from dermlearn.data import load

    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise DermlearnError("no images given")
    items = [Path(str(i)) for i in inputs]
    if all(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in items):
        return ResolvedInputs(unique_image_ids(items), [str(p) for p in items])
    if len(items) == 1:
        folder = items[0]
        direct = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                        and p.is_file()) if folder.is_dir() else []
        if direct:
            return ResolvedInputs(unique_image_ids(direct, root=folder), [str(p) for p in direct])
        return _from_manifest(load(str(inputs[0]), strict=False), str(inputs[0]))
    bad = [str(p) for p in items if not (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)]
    raise DermlearnError(f"not image files: {', '.join(bad[:5])}")

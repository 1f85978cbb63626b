"""What to score: image files, a folder or ``.zip`` of images, a dataset spec or a loaded Manifest,
resolved to unique image ids, file paths and (for a dataset, or DICOM files) each image's age,
sex and site.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pandas as pd

from dermlearn.data import Manifest
from dermlearn.data.ids import unique_image_ids
from dermlearn.data.images import IMAGE_EXTENSIONS, dicom_metadata
from dermlearn.data.sources import (
    image_exists,
    is_ignored,
    is_zip_archive,
    list_archive,
    refuse_url,
)
from dermlearn.errors import DermlearnError, ImageDecodeError
from dermlearn.models.lesion_classifier import METADATA_INPUTS

__all__ = ["Inputs", "ResolvedInputs", "resolve_inputs"]

#: What :func:`resolve_inputs` accepts.
Inputs = str | Path | Manifest | Sequence[str | Path]


class ResolvedInputs(NamedTuple):
    """Image ids (unique), file paths and, for a dataset, its ``age``/``sex``/``site`` table
    (N rows, in the same order; None for image files and folders, unless DICOM files among
    them carry those in their headers)."""

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
    """Ids, paths (and a dataset's metadata) from image files, a folder of images, a ``.zip``
    of images, one dataset spec (as :func:`dermlearn.data.load` reads it) or a Manifest.

    Ids of image files are their stems where those are unique, else their paths relative to
    the common folder (:func:`~dermlearn.data.ids.unique_image_ids`): two ``lesion1.jpg`` in
    different folders are two rows, never one id twice. A zip's images (flat or in folders)
    are read in place: their paths name the members (``/abs/photos.zip/nv/x.jpg``, see
    :mod:`dermlearn.data.sources`), their ids are relative to the archive. DICOM files give
    their header's age, sex and site as metadata. A URL is refused: download it first.
    """
    if isinstance(inputs, Manifest):
        return _from_manifest(inputs, inputs.source)
    from dermlearn.data import load

    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise DermlearnError("no images given")
    for item in inputs:
        refuse_url(item)  # Path() would make https://x/a.jpg "https:/x/a.jpg": not found
    items = [Path(str(i)) for i in inputs]
    if all(_is_image_file(p) for p in items):
        return _images(unique_image_ids(items), [str(p) for p in items])
    if len(items) == 1:
        folder = items[0]
        if is_zip_archive(folder):
            return _from_archive(folder)
        direct = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                        and p.is_file()) if folder.is_dir() else []
        if direct:
            return _images(unique_image_ids(direct, root=folder), [str(p) for p in direct])
        return _from_manifest(load(str(inputs[0]), invalid="keep"), str(inputs[0]))
    bad = [str(p) for p in items if not _is_image_file(p)]
    raise DermlearnError(f"not image files: {', '.join(bad[:5])}")


def _is_image_file(path: Path) -> bool:
    """An image file, or an image member of a zip archive (``/abs/photos.zip/nv/x.jpg``)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and image_exists(path)


def _from_archive(archive: Path) -> ResolvedInputs:
    """Every image of a zip archive, flat or in folders (hidden files and ``__MACOSX/`` left
    out), in the archive's order."""
    listing = list_archive(archive)  # DataError: unreadable, or zip-slip member names
    paths = [path for name, path in zip(listing.names, listing.paths)
             if PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS
             and not is_ignored(PurePosixPath(name).parts)]
    if not paths:
        raise DermlearnError(f"{archive}: no images in the zip archive (looked for "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))} files)")
    return _images(unique_image_ids(paths, root=listing.archive), paths)


def _images(ids: list[str], paths: list[str]) -> ResolvedInputs:
    """Image files as inputs: DICOM files among them bring their header's age, sex and site."""
    dicom = [i for i, p in enumerate(paths) if p.lower().endswith(".dcm")]
    if not dicom:
        return ResolvedInputs(ids, paths)
    metadata = pd.DataFrame({c: [None] * len(paths) for c in METADATA_INPUTS}, dtype=object)
    for i in dicom:
        try:
            found = dicom_metadata(paths[i])
        except ImageDecodeError:
            continue  # scoring names the file that cannot be decoded
        for column in METADATA_INPUTS:
            metadata.at[i, column] = found.get(column)
    metadata["age"] = pd.to_numeric(metadata["age"], errors="coerce").astype(float)
    return ResolvedInputs(ids, paths, metadata)

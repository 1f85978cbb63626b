"""Image ids from file paths that stay unique: the file's stem where no other file shares it,
else its path relative to the common folder (without the extension where that is unique, with
it otherwise). ``patientA/lesion1.jpg`` and ``patientB/lesion1.jpg`` become
``patientA/lesion1`` and ``patientB/lesion1``; ``img.bmp`` and ``img.tiff`` stay ``img.bmp``
and ``img.tiff``; a lone ``ISIC_0024306.jpg`` stays ``ISIC_0024306``.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from dermlearn.errors import DataError

__all__ = ["unique_image_ids"]


def unique_image_ids(paths: Sequence[str | Path], root: str | Path | None = None) -> list[str]:
    """One id per path (see the module docstring), relative to ``root`` (default: the folder
    the paths have in common). A path given twice is a DataError naming it."""
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    resolved = [p.resolve() for p in paths]
    twice = [str(p) for p, n in Counter(resolved).items() if n > 1]
    if twice:
        raise DataError(f"{len(twice)} image file(s) given more than once, e.g. {twice[0]}")
    if root is None:
        root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    root = Path(root).resolve()
    relative = [PurePosixPath(*p.relative_to(root).parts) if p.is_relative_to(root)
                else PurePosixPath(p.as_posix()) for p in resolved]
    stems = Counter(p.stem for p in paths)
    bare = Counter(str(r.with_suffix("")) for r in relative)
    ids = []
    for path, rel in zip(paths, relative):
        if stems[path.stem] == 1:
            ids.append(path.stem)
        elif bare[str(rel.with_suffix(""))] == 1:
            ids.append(str(rel.with_suffix("")))
        else:
            ids.append(str(rel))
    return ids

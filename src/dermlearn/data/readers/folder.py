"""A folder with one sub-folder per class (``root/<label>/<image>.jpg``), as Keras and
torchvision's ImageFolder expect. There is no lesion information: each image is its own lesion.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermlearn.data.ids import unique_image_ids
from dermlearn.data.images import IMAGE_EXTENSIONS
from dermlearn.data.manifest import Problem
from dermlearn.errors import DataError


def _class_dirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def detect(path: Path) -> bool:
    if not path.is_dir():
        return False
    # as read() takes them: images anywhere below a class folder (e.g. nv/patientA/lesion1.jpg)
    return any(f.suffix.lower() in IMAGE_EXTENSIONS for d in _class_dirs(path)
               for f in d.rglob("*"))


def read(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    files = [(class_dir.name, file) for class_dir in _class_dirs(path)
             for file in sorted(class_dir.rglob("*"))
             if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DataError(f"{path}: no images found in class sub-folders")
    # Ids are the file stems, made unique (by the path below a class folder) where two files
    # share a stem: patientA/lesion1.jpg and patientB/lesion1.jpg are two images.
    ids = unique_image_ids([file for _, file in files], root=path)
    rows = [{"image_id": image_id, "path": str(file), "label": label, "lesion_id": image_id,
             "label_raw": label, "source_row": str(file.relative_to(path))}
            for image_id, (label, file) in zip(ids, files)]
    table = pd.DataFrame(rows)
    for column in ("patient_id", "age", "sex", "site", "label_source"):
        table[column] = None
    problems = [Problem("no_lesion_id", "folder datasets carry no lesion ids: each image is treated "
                        "as its own lesion (splits may leak if one lesion has several images)",
                        file=str(path), severity="warning")]
    return table, problems

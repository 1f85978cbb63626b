"""HAM10000 as distributed: ``HAM10000_metadata.csv`` plus images in any sub-folder(s).

The official layout has ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``; a single
``images/`` folder works too. Lesion masks (``*_segmentation.png``, Tschandl et al. 2020) are
attached as ``mask_path`` when a ``masks`` folder holds them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermlearn.data.manifest import Problem
from dermlearn.data.readers._common import (
    clean_age,
    clean_sex,
    clean_site,
    clean_text,
    index_images,
    read_table,
    require_columns,
    resolve_paths,
    source_rows,
)
from dermlearn.errors import DataError

METADATA_FILE = "HAM10000_metadata.csv"
MASK_DIRS = ("masks", "HAM10000_segmentations_lesion_tschandl")


def detect(path: Path) -> bool:
    return (path.is_dir() and (path / METADATA_FILE).is_file()) or path.name == METADATA_FILE


def read(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    root = path.parent if path.is_file() else path
    csv = root / METADATA_FILE
    if not csv.is_file():
        raise DataError(f"{root}: no {METADATA_FILE} (is this the HAM10000 folder?)")
    meta = read_table(csv)
    require_columns(meta, ["lesion_id", "image_id", "dx"], csv)
    images, problems = index_images(root, exclude_dirs=MASK_DIRS)
    ids = meta["image_id"].str.strip()
    table = pd.DataFrame({
        "image_id": ids,
        "path": resolve_paths(ids, images, root),
        "label": meta["dx"].str.strip(),
        "lesion_id": meta["lesion_id"].str.strip().replace("", None),
        "patient_id": None,
        "age": clean_age(meta["age"]) if "age" in meta else None,
        "sex": clean_sex(meta["sex"]) if "sex" in meta else None,
        "site": clean_site(meta["localization"]) if "localization" in meta else None,
        "label_source": clean_text(meta["dx_type"]) if "dx_type" in meta else None,
        "label_raw": meta["dx"],
        "source_row": source_rows(csv, len(meta)),
    })
    masks = _mask_paths(root, ids)
    if masks is not None:
        table["mask_path"] = masks
    extra = [c for c in meta.columns if c not in ("lesion_id", "image_id", "dx", "dx_type", "age",
                                                  "sex", "localization")]
    for column in extra:
        table[column] = meta[column]
    return table, problems


def _mask_paths(root: Path, ids: pd.Series) -> list[str | None] | None:
    for name in MASK_DIRS:
        folder = root / name
        if folder.is_dir():
            return [str(p) if (p := folder / f"{i}_segmentation.png").is_file() else None
                    for i in ids]
    return None

"""Any manifest CSV with at least an image (path or id) column and a label column.

Column names are guessed from common spellings, or given explicitly (``path_col``,
``label_col``...). A folder with a ``manifest.csv`` is read as that file. Relative paths resolve
against ``images`` (default: the CSV's folder); an image id without a path is looked up by file
name under that folder.
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
    find_column,
    index_images,
    read_table,
    resolve_paths,
    source_rows,
)
from dermlearn.errors import DataError

GUESSES = {
    "path": ("path", "image_path", "filepath", "file_path", "file", "filename", "file_name"),
    "image_id": ("image_id", "image", "image_name", "isic_id", "id", "name"),
    "label": ("label", "dx", "diagnosis", "class", "target", "category"),
    "lesion_id": ("lesion_id", "lesion"),
    "patient_id": ("patient_id", "patient"),
    "age": ("age", "age_approx"),
    "sex": ("sex", "gender"),
    "site": ("site", "localization", "anatom_site_general", "anatom_site_general_challenge"),
    "label_source": ("label_source", "dx_type", "diagnosis_confirm_type"),
}


#: A folder holding this file is read as a csv manifest (dermlearn's own convention).
MANIFEST_FILE = "manifest.csv"


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / MANIFEST_FILE).is_file()
    return path.is_file() and path.suffix.lower() in (".csv", ".tsv")


def read(path: Path, images: str | Path | None = None,
         **columns: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a manifest CSV; ``columns`` maps a manifest column (``path_col='file'``...) to a CSV column."""
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = read_table(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    chosen: dict[str, str | None] = {}
    for field, guesses in GUESSES.items():
        explicit = columns.pop(f"{field}_col", None)
        if explicit is not None and explicit not in raw.columns:
            raise DataError(f"{path}: column {explicit!r} (given for {field}) not found; "
                            f"columns are {list(raw.columns)}")
        chosen[field] = explicit or find_column(raw, guesses)
    if columns:
        raise TypeError(f"unknown options {sorted(columns)}")
    if chosen["label"] is None:
        raise DataError(f"{path}: no label column (tried {GUESSES['label']}); name it with label_col")
    if chosen["path"] is None and chosen["image_id"] is None:
        raise DataError(f"{path}: no image path or id column (tried {GUESSES['path']} and "
                        f"{GUESSES['image_id']}); name it with path_col")
    root = Path(images) if images else path.parent
    problems: list[Problem] = []
    if chosen["path"] is not None:
        rel = raw[chosen["path"]].str.strip()
        paths = [str(p if (p := Path(r)).is_absolute() else root / p) for r in rel]
        ids = raw[chosen["image_id"]].str.strip() if chosen["image_id"] else \
            pd.Series([Path(r).stem for r in rel])
    else:
        ids = raw[chosen["image_id"]].str.strip()
        index, problems = index_images(root)
        paths = resolve_paths(ids, index, root)

    def column(field: str) -> pd.Series:
        name = chosen[field]
        return raw[name] if name else pd.Series([""] * len(raw), dtype=object)

    lesion = column("lesion_id").str.strip()
    table = pd.DataFrame({
        "image_id": ids.to_numpy(),
        "path": paths,
        "label": raw[chosen["label"]].str.strip(),
        "lesion_id": lesion.where(lesion.astype(bool), ids.to_numpy()),
        "patient_id": column("patient_id").str.strip().replace("", None),
        "age": clean_age(column("age")),
        "sex": clean_sex(column("sex")),
        "site": clean_site(column("site")),
        "label_source": clean_text(column("label_source")),
        "label_raw": raw[chosen["label"]],
        "source_row": source_rows(path, len(raw)),
    })
    if chosen["lesion_id"] is None:
        problems.append(Problem("no_lesion_id", "no lesion_id column: each image is treated as its "
                                "own lesion (splits may leak if one lesion has several images)",
                                file=str(path), severity="warning"))
    used = {c for c in chosen.values() if c}
    for extra in raw.columns:
        if extra not in used and extra not in table.columns:
            table[extra] = raw[extra].to_numpy()
    return table, problems

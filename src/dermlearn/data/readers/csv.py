"""Any manifest CSV with at least an image (path or id) column and a label column.

Column names are guessed from common spellings, or given explicitly (``label_col``,
``image_col``, ``id_col``, ``lesion_col``...; on the command line ``--label-col`` etc.). The
field separator (``,`` ``;`` tab or ``|``) is sniffed from the file unless ``sep`` is given. A
folder with a ``manifest.csv`` is read as that file. Relative paths resolve against ``images``
(default: the CSV's folder); an image id without a path is looked up by file name under that
folder.
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
    sniff_separator,
    source_rows,
)
from dermlearn.errors import DataError

GUESSES = {
    "path": ("path", "image_path", "filepath", "file_path", "file", "filename", "file_name"),
    "image_id": ("image_id", "image", "image_name", "isic_id", "id", "name"),
    "label": ("label", "dx", "diagnosis", "class", "target", "category", "diagnosis_1",
              "histo_dx", "histopathology", "clinical_dx"),
    "lesion_id": ("lesion_id", "lesion"),
    "patient_id": ("patient_id", "patient"),
    "age": ("age", "age_approx"),
    "sex": ("sex", "gender"),
    "site": ("site", "localization", "anatom_site_general", "anatom_site_general_challenge"),
    "label_source": ("label_source", "dx_type", "diagnosis_confirm_type"),
}


#: Option name (``load(..., label_col=)``, ``--label-col``) -> the field it names.
COLUMN_OPTIONS = {"image_col": "path", "id_col": "image_id", "label_col": "label",
                  "lesion_col": "lesion_id", "patient_col": "patient_id", "age_col": "age",
                  "sex_col": "sex", "site_col": "site", "label_source_col": "label_source"}
#: What each option is called on the command line, for messages.
_FLAG = {name: "--" + name.replace("_", "-") for name in COLUMN_OPTIONS}

#: A folder holding this file is read as a csv manifest (dermlearn's own convention).
MANIFEST_FILE = "manifest.csv"


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / MANIFEST_FILE).is_file()
    return path.is_file() and path.suffix.lower() in (".csv", ".tsv")


def read(path: Path, images: str | Path | None = None, sep: str | None = None,
         **columns: str | None) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a manifest CSV; ``columns`` names CSV columns by option (``label_col='histo_dx'``,
    ``image_col='file'``..., see :data:`COLUMN_OPTIONS`); ``sep`` the field separator (default:
    sniffed)."""
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    unknown = sorted(set(columns) - set(COLUMN_OPTIONS))
    if unknown:
        raise TypeError(f"unknown options {unknown}; csv takes {sorted(COLUMN_OPTIONS)}, sep, images")
    sep = sep or ("\t" if path.suffix.lower() == ".tsv" else sniff_separator(path))
    raw = read_table(path, sep=sep)
    chosen: dict[str, str | None] = {}
    for option, field in COLUMN_OPTIONS.items():
        explicit = columns.get(option)
        if explicit is not None and explicit not in raw.columns:
            found = find_column(raw, (explicit,))
            if found is None:
                raise DataError(f"{path}: column {explicit!r} (given with {_FLAG[option]}) not "
                                f"found; columns are {', '.join(map(str, raw.columns))}"
                                + _separator_hint(raw, sep))
            explicit = found
        chosen[field] = explicit or find_column(raw, GUESSES[field])
    if chosen["label"] is None:
        raise DataError(f"{path}: no label column (tried {', '.join(GUESSES['label'])}); name it "
                        f"with --label-col COLUMN (Python: label_col=); columns are "
                        f"{', '.join(map(str, raw.columns))}" + _separator_hint(raw, sep))
    if chosen["path"] is None and chosen["image_id"] is None:
        raise DataError(f"{path}: no image path or id column (tried {', '.join(GUESSES['path'])}, "
                        f"{', '.join(GUESSES['image_id'])}); name it with --image-col COLUMN "
                        f"(a file name or path) or --id-col COLUMN (an image id looked up in the "
                        f"CSV's folder); columns are {', '.join(map(str, raw.columns))}"
                        + _separator_hint(raw, sep))
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


def _separator_hint(raw: pd.DataFrame, sep: str) -> str:
    """A hint when the whole header was read as one column: the separator is probably not
    ``sep``."""
    if len(raw.columns) == 1:
        return f" (the header was read as one column with separator {sep!r}: give --sep)"
    return ""

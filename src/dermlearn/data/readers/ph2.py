"""PH2 (Mendonca et al. 2013) as distributed.

Two layouts are read:
* the original: ``PH2_dataset.txt`` (a ``||``-delimited table with histological and clinical
  diagnosis and dermoscopic criteria) and ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/
  IMDxxx.bmp``;
* the simplified copy: ``PH2_simple_dataset.csv`` (``image_name,diagnosis``) and ``images/``.
When both tables are present the original one is used and the two are checked to agree.
PH2 has one image per lesion, so ``lesion_id`` is the image name.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermlearn.data.manifest import Problem
from dermlearn.data.readers._common import (
    decode_error_location,
    index_images,
    read_table,
    require_columns,
    resolve_paths,
)
from dermlearn.errors import DataError

TABLE_FILE = "PH2_dataset.txt"
SIMPLE_FILE = "PH2_simple_dataset.csv"
CLINICAL_CODES = {"0": "Common Nevus", "1": "Atypical Nevus", "2": "Melanoma"}
_CRITERIA = ["asymmetry", "pigment_network", "dots_globules", "streaks", "regression_areas",
             "blue_whitish_veil", "colors"]


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / TABLE_FILE).is_file() or (path / SIMPLE_FILE).is_file()
    return path.name in (TABLE_FILE, SIMPLE_FILE)


def parse_table(path: Path) -> pd.DataFrame:
    """Parse ``PH2_dataset.txt`` into one row per image (columns: name, histology, label, criteria)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({decode_error_location(path, exc)}); "
                        f"re-save the file as UTF-8") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith("||") or "Name" in line:
            continue
        cells = [c.strip() for part in line.strip().strip("|").split("||") for c in part.split("|")]
        if len(cells) != 10:
            raise DataError(f"{path.name}:{number}: expected 10 fields, found {len(cells)}")
        name, histology, clinical, *criteria = cells
        if clinical not in CLINICAL_CODES:
            raise DataError(f"{path.name}:{number}: clinical diagnosis {clinical!r} is not 0, 1 or 2")
        rows.append({"name": name, "histology": histology or None, "clinical_diagnosis": clinical,
                     "label": CLINICAL_CODES[clinical], "source_row": f"{path.name}:{number}",
                     **dict(zip(_CRITERIA, criteria))})
    if not rows:
        raise DataError(f"{path}: no image rows found (expected lines starting with '||')")
    return pd.DataFrame(rows)


def read(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    root = path.parent if path.is_file() else path
    problems: list[Problem] = []
    if (root / TABLE_FILE).is_file():
        table = parse_table(root / TABLE_FILE)
        if (root / SIMPLE_FILE).is_file():
            simple = _read_simple(root / SIMPLE_FILE).set_index("name")["label"]
            for row in table.itertuples():
                if row.name in simple.index and simple[row.name] != row.label:
                    problems.append(Problem(
                        "label_conflict", f"{row.name} is {row.label!r} in {TABLE_FILE} but "
                        f"{simple[row.name]!r} in {SIMPLE_FILE}", file=str(root / SIMPLE_FILE),
                        row=row.source_row, image_id=row.name))
    else:
        table = _read_simple(root / SIMPLE_FILE)
    images, found = index_images(root)
    problems += found
    ids = table["name"]
    out = pd.DataFrame({
        "image_id": ids,
        "path": resolve_paths(ids, images, root),
        "label": table["label"],
        "lesion_id": ids,
        "patient_id": None,
        "age": None, "sex": None, "site": None,
        "label_source": ["histo" if isinstance(h, str) and h else "clinical"
                         for h in table.get("histology", [None] * len(table))],
        "label_raw": table["label"],
        "source_row": table["source_row"],
    })
    for column in ["histology", "clinical_diagnosis", *_CRITERIA]:
        if column in table:
            out[column] = table[column].to_numpy()
    return out, problems


def _read_simple(path: Path) -> pd.DataFrame:
    simple = read_table(path)
    require_columns(simple, ["image_name", "diagnosis"], path)
    return pd.DataFrame({"name": simple["image_name"].str.strip(),
                         "label": simple["diagnosis"].str.strip(),
                         "source_row": [f"{path.name}:{i + 2}" for i in range(len(simple))]})

"""ISIC challenge ground truth (2016-2020 style), with the optional metadata CSV.

Ground truth is either one-hot class columns (``image,MEL,NV,BCC,...``, ISIC 2018/2019) or a
``diagnosis`` / ``target`` column (ISIC 2020's ``ISIC_2020_Training_GroundTruth.csv``). The
metadata CSV (``lesion_id``, ``patient_id``, ``age_approx``, ``sex``,
``anatom_site_general[_challenge]``) is found beside the ground truth when its name contains
``metadata``. Images are found anywhere under the ground truth's folder by image id.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
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

IMAGE_COLUMNS = ("image", "image_name", "image_id", "isic_id")
#: One-hot columns used by the ISIC challenges (UNK is never a ground-truth class).
ONE_HOT = ("MEL", "NV", "BCC", "AK", "AKIEC", "BKL", "DF", "VASC", "SCC", "UNK")
SITE_COLUMNS = ("anatom_site_general", "anatom_site_general_challenge", "anatom_site_general_")


def _is_ground_truth(columns: list[str]) -> bool:
    upper = {c.upper() for c in columns}
    lower = {c.lower() for c in columns}
    has_image = bool(lower & set(IMAGE_COLUMNS))
    return has_image and (len(upper & set(ONE_HOT)) >= 2 or bool(lower & {"diagnosis", "target"}))


def _header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [c.strip() for c in f.readline().strip().split(",")]
    except (OSError, UnicodeDecodeError):
        return []


def find_ground_truth(folder: Path) -> Path | None:
    for csv in sorted(folder.glob("*.csv")):
        if "metadata" not in csv.name.lower() and _is_ground_truth(_header(csv)):
            return csv
    return None


def detect(path: Path) -> bool:
    if path.is_dir():
        return find_ground_truth(path) is not None
    return path.suffix.lower() == ".csv" and _is_ground_truth(_header(path))


def read(path: Path, metadata: str | Path | None = None,
         images: str | Path | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    gt_path = find_ground_truth(path) if path.is_dir() else path
    if gt_path is None:
        raise DataError(f"{path}: no ISIC ground-truth CSV (image column plus one-hot class "
                        f"columns or a diagnosis/target column)")
    root = gt_path.parent
    gt = read_table(gt_path)
    image_col = find_column(gt, IMAGE_COLUMNS)
    if image_col is None:
        raise DataError(f"{gt_path}: ISIC ground-truth CSV has no image column (expected one of "
                        f"{', '.join(IMAGE_COLUMNS)}); columns found: "
                        f"{', '.join(map(str, gt.columns)) or '(none)'}")
    ids = gt[image_col].str.strip()
    labels, label_problems = _labels(gt, gt_path)
    meta = _metadata(gt, root, metadata, gt_path)
    image_root = Path(images) if images else root
    index, problems = index_images(image_root)
    table = pd.DataFrame({
        "image_id": ids,
        "path": resolve_paths(ids, index, image_root),
        "label": labels,
        "lesion_id": _column(meta, ("lesion_id",)),
        "patient_id": _column(meta, ("patient_id",)),
        "age": clean_age(_column(meta, ("age_approx", "age"), default="")),
        "sex": clean_sex(_column(meta, ("sex",), default="")),
        "site": clean_site(_column(meta, SITE_COLUMNS, default="")),
        "label_source": None,
        "label_raw": labels,
        "source_row": source_rows(gt_path, len(gt)),
    })
    table["lesion_id"] = table["lesion_id"].where(table["lesion_id"].astype(bool), None)
    table["patient_id"] = table["patient_id"].where(table["patient_id"].astype(bool), None)
    if table["lesion_id"].isna().any():
        # Without a lesion id every image is its own lesion; say so, since it may leak.
        missing = table["lesion_id"].isna()
        table.loc[missing, "lesion_id"] = table.loc[missing, "image_id"]
        problems.append(Problem("no_lesion_id", f"{int(missing.sum())} images have no lesion_id; "
                                "each is treated as its own lesion (splits may leak if one lesion "
                                "has several images)", file=str(gt_path),
                                severity="warning"))
    return table, label_problems + problems


def _labels(gt: pd.DataFrame, path: Path) -> tuple[list[str | None], list[Problem]]:
    diagnosis = find_column(gt, ("diagnosis",))
    target = find_column(gt, ("target", "benign_malignant"))
    one_hot = [c for c in gt.columns if c.upper() in ONE_HOT]
    rows = source_rows(path, len(gt))
    problems: list[Problem] = []
    if diagnosis is not None:
        labels = clean_text(gt[diagnosis]).tolist()
        if target is not None:  # ISIC 2020: 'unknown' diagnosis falls back to benign/malignant
            coarse = gt[target].str.strip().str.lower().map(
                {"0": "benign", "1": "malignant", "benign": "benign", "malignant": "malignant"})
            labels = [d if d else coarse.iloc[i] for i, d in enumerate(labels)]
        return labels, problems
    if len([c for c in one_hot if c.upper() != "UNK"]) >= 2:
        values = gt[one_hot].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        labels = []
        for i, row in enumerate(values):
            hot = np.flatnonzero(row >= 0.5)
            image_id = str(gt.iloc[i, 0])
            if len(hot) == 1 and not np.isnan(row).any() and one_hot[hot[0]].upper() == "UNK":
                # ISIC 2019's 'none of the other diagnoses': no class to train or score on
                problems.append(Problem(
                    "unknown_class", f"image {image_id!r} is marked {one_hot[hot[0]]}=1 (ISIC's "
                    f"'none of the other diagnoses'), which is no class to train or score on; "
                    f"drop such rows with --lenient, or give the image its diagnosis",
                    file=str(path), row=rows[i], image_id=image_id))
                labels.append(None)
            elif len(hot) != 1 or np.isnan(row).any():
                blank = [one_hot[j] for j in np.flatnonzero(np.isnan(row))]
                found = ", ".join(f"{one_hot[j]}=1" for j in hot) or "none"
                problems.append(Problem(
                    "bad_one_hot", f"image {image_id!r}: expected exactly one class column set to "
                    f"1 (of {', '.join(one_hot)}), found {found}"
                    + (f"; not a number in {', '.join(blank)}" if blank else ""),
                    file=str(path), row=rows[i], image_id=image_id))
                labels.append(None)
            else:
                labels.append(one_hot[hot[0]])
        return labels, problems
    if target is not None:
        return gt[target].str.strip().str.lower().map(
            {"0": "benign", "1": "malignant"}).tolist(), problems
    raise DataError(f"{path}: no class columns, diagnosis or target column")


def _metadata(gt: pd.DataFrame, root: Path, metadata: str | Path | None,
              gt_path: Path) -> pd.DataFrame:
    """Ground truth merged with the metadata CSV (if any), row-aligned with ``gt``."""
    meta_path = Path(metadata) if metadata else next(
        (p for p in sorted(root.glob("*.csv")) if "metadata" in p.name.lower()), None)
    if meta_path is None:
        return gt
    meta = read_table(meta_path)
    image_col = find_column(meta, IMAGE_COLUMNS)
    if image_col is None:
        raise DataError(f"{meta_path}: metadata CSV has no image column ({IMAGE_COLUMNS})")
    gt_image = find_column(gt, IMAGE_COLUMNS)
    meta = meta.drop_duplicates(image_col).set_index(image_col)
    aligned = meta.reindex(gt[gt_image].str.strip()).reset_index(drop=True).fillna("")
    merged = gt.copy()
    for column in aligned.columns:
        if column not in merged.columns:
            merged[column] = aligned[column].to_numpy()
    return merged


def _column(table: pd.DataFrame, names: tuple[str, ...], default: str | None = None) -> pd.Series:
    column = find_column(table, names)
    if column is None:
        return pd.Series([default] * len(table), dtype=object)
    return table[column].str.strip()

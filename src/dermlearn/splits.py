"""Lesion-safe splits: stratified, grouped folds and the leakage check every command runs.

A split table has one row per image: ``image_id, lesion_id, label, fold`` (plus
``patient_id`` when grouping by patient); ``fold`` is ``"0"``..``"K-1"`` or ``"test"``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from dermlearn.data.manifest import Manifest
from dermlearn.errors import DataError, LeakageError

TEST = "test"
SPLIT_COLUMNS = ("image_id", "lesion_id", "label", "fold")
_GROUP_COLUMN = {"lesion": "lesion_id", "patient": "patient_id"}


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int,
                   seed: int) -> np.ndarray:
    """Fold index (0..n_splits-1) per sample, stratified by label, grouped by group."""
    if len(np.unique(groups)) < n_splits:
        raise DataError(f"cannot make {n_splits} grouped folds from {len(np.unique(groups))} groups")
    folds = np.empty(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare classes with fewer groups than folds are expected
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[held] = k
    return folds


def make_splits(manifest: Manifest, n_folds: int = 5, *, test_fraction: float = 0.0,
                group: str = "lesion", seed: int = 0) -> pd.DataFrame:
    """Assign each image to a fold (or the held-out ``test`` part), grouped by lesion or patient.

    ``test_fraction`` is approximated by one of ``round(1 / test_fraction)`` grouped,
    stratified parts. Class ratios in every part follow the whole (StratifiedGroupKFold).
    """
    if group not in _GROUP_COLUMN:
        raise ValueError(f"group must be 'lesion' or 'patient', not {group!r}")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, not {n_folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction}")
    groups = manifest.groups(group)
    labels = manifest.table["label"].astype(str).to_numpy()
    fold = np.full(len(manifest), "", dtype=object)
    remaining = np.arange(len(manifest))
    if test_fraction > 0:
        parts = max(2, int(round(1.0 / test_fraction)))
        is_test = _grouped_folds(labels, groups, parts, seed) == 0
        fold[is_test] = TEST
        remaining = np.flatnonzero(~is_test)
    if n_folds == 1:
        fold[remaining] = "0"
    else:
        inner = _grouped_folds(labels[remaining], groups[remaining], n_folds, seed + 1)
        fold[remaining] = inner.astype(str)
    table = manifest.table[["image_id", "lesion_id", "label"]].copy()
    if group == "patient":
        table["patient_id"] = manifest.table["patient_id"]
    table["fold"] = fold
    check_no_leakage(table, group=group)
    return table


def check_no_leakage(splits: pd.DataFrame, *, group: str = "lesion",
                     manifest: Manifest | None = None) -> None:
    """Raise LeakageError if one lesion (or patient) appears in more than one part.

    With ``manifest``, group ids are taken from the manifest (not trusted from the split file)
    and every split image must exist in it.
    """
    column = _GROUP_COLUMN[group]
    if manifest is not None:
        known = manifest.table.set_index("image_id")
        unknown = sorted(set(splits["image_id"]) - set(known.index))
        if unknown:
            raise DataError(f"{len(unknown)} split image ids are not in {manifest.source}",
                            [f"unknown image_id {i!r}" for i in unknown])
        groups = known.loc[splits["image_id"], column].to_numpy()
    else:
        if column not in splits.columns:
            raise DataError(f"split table has no {column} column to check {group} leakage")
        groups = splits[column].to_numpy()
    parts = pd.DataFrame({"group": groups, "fold": splits["fold"].astype(str).to_numpy(),
                          "image_id": splits["image_id"].to_numpy()})
    spread = parts.groupby("group")["fold"].nunique()
    leaking = spread[spread > 1].index.tolist()
    if leaking:
        details = []
        for g in leaking[:20]:
            rows = parts[parts["group"] == g]
            details.append(f"{group} {g!r} is in parts " + ", ".join(
                f"{f} ({', '.join(r['image_id'])})" for f, r in rows.groupby("fold")))
        more = f"\n  ... and {len(leaking) - 20} more" if len(leaking) > 20 else ""
        raise LeakageError(f"{len(leaking)} {group}(s) fall in more than one split part; training "
                           f"and evaluating on the same {group} inflates results:\n  "
                           + "\n  ".join(details) + more)


def save_splits(splits: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    splits.to_csv(path, index=False)
    return path


def load_splits(path: str | Path, manifest: Manifest | None = None, *,
                group: str = "lesion") -> pd.DataFrame:
    """Read a split CSV and run the leakage check (against ``manifest`` when given)."""
    path = Path(path)
    try:
        splits = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable split CSV ({exc})") from None
    missing = [c for c in ("image_id", "fold") if c not in splits.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(SPLIT_COLUMNS)}")
    try:
        check_no_leakage(splits, group=group, manifest=manifest)
    except LeakageError as exc:
        raise LeakageError(f"{path}: {exc}") from None
    return splits


def split_summary(splits: pd.DataFrame) -> pd.DataFrame:
    """Per part: images, lesions and class shares (%); last column is the largest deviation
    (percentage points) of a class share from the whole set's."""
    whole = splits["label"].value_counts(normalize=True) * 100
    rows = {}
    for fold, part in splits.groupby("fold", sort=True):
        share = part["label"].value_counts(normalize=True).reindex(whole.index, fill_value=0) * 100
        rows[fold] = {"images": len(part), "lesions": part["lesion_id"].nunique(),
                      **{f"%{c}": round(v, 1) for c, v in share.items()},
                      "max_dev_pts": round(float((share - whole).abs().max()), 2)}
    rows["all"] = {"images": len(splits), "lesions": splits["lesion_id"].nunique(),
                   **{f"%{c}": round(v, 1) for c, v in whole.items()}, "max_dev_pts": 0.0}
    return pd.DataFrame.from_dict(rows, orient="index")

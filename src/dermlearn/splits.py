"""Lesion-safe splits: stratified, grouped folds and the leakage check every command runs.

A split table has one row per image: ``image_id, lesion_id, label, fold`` (plus
``patient_id`` when grouping by patient). ``fold`` is an integer, in memory and in split files:
``0``..``K-1`` for the cross-validation folds and :data:`TEST` (``-1``) for the held-out test
part, so ``splits[splits.fold == 0]`` is fold 0 and ``splits[splits.fold == TEST]`` the test
part. Split files written by older versions (``"test"``) read the same.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from dermlearn.data.manifest import Manifest
from dermlearn.data.readers._common import read_table
from dermlearn.errors import DataError, DermlearnError, LeakageError

#: The fold id of the held-out test part (images no model of a run trains or is selected on).
TEST = -1
#: How older split files named the test part.
_LEGACY_TEST = "test"
SPLIT_COLUMNS = ("image_id", "lesion_id", "label", "fold")
_GROUP_COLUMN = {"lesion": "lesion_id", "patient": "patient_id"}
_EXAMPLES = 5  # ids quoted in an error message


class SplitError(DermlearnError, ValueError):
    """Split options out of range (number of folds, test fraction, grouping).

    Also a ValueError, which these checks raised before.
    """


log = logging.getLogger(__name__)


def classes_short_of_parts(splits: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """``{class: (images, parts)}`` for each class with fewer images than the split's parts
    other than the test part (``label`` and ``fold`` columns): some validation part then holds
    none of it, so that fold's figures for the class are undefined."""
    usable = splits[splits["fold"] != TEST]
    parts = usable["fold"].nunique()
    counts = usable["label"].astype(str).value_counts()
    return {c: (int(n), int(parts)) for c, n in counts.items() if parts > 1 and n < parts}


def warn_short_classes(splits: pd.DataFrame) -> None:
    """Log a warning naming each class with fewer images than parts (see
    :func:`classes_short_of_parts`), with the ways out."""
    short = classes_short_of_parts(splits)
    if short:
        parts = next(iter(short.values()))[1]
        named = ", ".join(f"{c} ({n} images)" for c, (n, _) in sorted(short.items()))
        log.warning(f"{len(short)} class(es) have fewer images than the {parts} parts of the "
                    f"split: {named}; some validation parts hold none of them, so their "
                    f"per-fold figures are undefined; use fewer folds, merge rare classes "
                    f"(--max-class-size or a coarser taxonomy), or add images")


def _examples(items: list, n: int = _EXAMPLES) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int,
                   seed: int) -> np.ndarray:
    """Fold index (0..n_splits-1) per sample, stratified by label, grouped by group."""
    if len(np.unique(groups)) < n_splits:
        raise DataError(f"cannot make {n_splits} grouped folds from {len(np.unique(groups))} groups")
    largest = int(np.unique(labels, return_counts=True)[1].max())
    if largest < n_splits:  # scikit-learn's own ValueError would be a traceback
        raise SplitError(f"cannot make {n_splits} stratified parts: every class has fewer than "
                         f"{n_splits} images (the largest has {largest}); ask for fewer folds "
                         f"or a larger validation/test fraction, or add images")
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
        raise SplitError(f"group (--group) must be 'lesion' or 'patient', not {group!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise SplitError(f"the number of folds (--folds) must be a whole number >= 1, "
                         f"not {n_folds!r}")
    if not isinstance(test_fraction, (int, float, np.number)) or isinstance(test_fraction, bool) \
            or not 0.0 <= test_fraction < 1.0:
        raise SplitError(f"the test fraction (--test-fraction) is the share of images held out "
                         f"for testing and must be in [0, 1), e.g. 0.2; not {test_fraction!r}")
    groups = manifest.groups(group)
    labels = manifest.table["label"].astype(str).to_numpy()
    fold = np.zeros(len(manifest), dtype=np.int64)
    remaining = np.arange(len(manifest))
    if test_fraction > 0:
        parts = max(2, int(round(1.0 / test_fraction)))
        is_test = _grouped_folds(labels, groups, parts, seed) == 0
        fold[is_test] = TEST
        remaining = np.flatnonzero(~is_test)
    if n_folds > 1:
        fold[remaining] = _grouped_folds(labels[remaining], groups[remaining], n_folds, seed + 1)
    table = manifest.table[["image_id", "lesion_id", "label"]].copy()
    if group == "patient":
        table["patient_id"] = manifest.table["patient_id"]
    table["fold"] = fold
    check_no_leakage(table, group=group)
    warn_short_classes(table)
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
    parts = pd.DataFrame({"group": groups, "fold": splits["fold"].to_numpy(),
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
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    splits = read_table(path)  # DataError naming the file: encoding, syntax, empty
    missing = [c for c in ("image_id", "fold") if c not in splits.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(SPLIT_COLUMNS)}")
    splits["image_id"] = splits["image_id"].str.strip()
    check_split_rows(splits, manifest, source=path)
    splits["fold"] = fold_ids(splits["fold"], source=path)
    try:
        check_no_leakage(splits, group=group, manifest=manifest)
    except LeakageError as exc:
        raise LeakageError(f"{path}: {exc}") from None
    return splits


def fold_ids(folds: pd.Series | np.ndarray, *, source: str | Path = "split table") -> np.ndarray:
    """Fold ids (N,) int64 from a split file's column: integers, with ``test`` (older files)
    read as :data:`TEST`; anything else is a DataError naming the line."""
    text = pd.Series(np.asarray(folds, dtype=object)).astype(str).str.strip()
    text = text.where(text.str.lower() != _LEGACY_TEST, str(TEST))
    values = pd.to_numeric(text, errors="coerce")
    bad = np.flatnonzero((values.isna() | (values != values.round()) | (values < TEST)).to_numpy())
    if len(bad):
        shown = [f"line {i + 2}: {text.iat[i]!r}" for i in bad]
        raise DataError(f"{source}: {len(bad)} fold value(s) are not a fold number (0..K-1) or "
                        f"{_LEGACY_TEST!r}/{TEST} for the test part: {_examples(shown)}")
    return values.to_numpy().astype(np.int64)


def check_split_rows(splits: pd.DataFrame, manifest: Manifest | None = None, *,
                     source: str | Path = "split table") -> None:
    """Raise DataError (naming ``source``) unless every image id has exactly one row and, with
    ``manifest``, the rows are exactly the manifest's images: none missing, none unknown."""
    ids = splits["image_id"].astype(str)
    blank = [int(i) + 2 for i in np.flatnonzero((ids.str.strip() == "").to_numpy())]
    if blank:
        raise DataError(f"{source}: {len(blank)} row(s) have an empty image_id (line(s) "
                        f"{_examples(blank)})")
    if "fold" in splits.columns:
        no_fold = [int(i) + 2 for i in
                   np.flatnonzero((splits["fold"].astype(str).str.strip() == "").to_numpy())]
        if no_fold:
            raise DataError(f"{source}: {len(no_fold)} row(s) have an empty fold (line(s) "
                            f"{_examples(no_fold)}); give each image a fold (0..K-1, or "
                            f"{TEST} for the test part)")
    lines: dict[str, list[int]] = {}
    for row in np.flatnonzero(ids.duplicated(keep=False).to_numpy()):
        lines.setdefault(ids.iat[row], []).append(int(row) + 2)  # line 1 is the header
    if lines:
        examples = [f"{i!r} (lines {', '.join(map(str, rows))})" for i, rows in lines.items()]
        raise DataError(f"{source}: {len(lines)} image id(s) have more than one row, e.g. "
                        f"{_examples(examples)}; each image needs exactly one row (one fold)")
    if manifest is None:
        return
    known = manifest.table["image_id"].astype(str)
    given = set(ids)
    unknown = sorted(given - set(known))
    if unknown:
        raise DataError(f"{source}: {len(unknown)} image id(s) are not in the dataset "
                        f"{manifest.source}, e.g. {_examples([repr(i) for i in unknown])}; "
                        f"was the split made for another dataset?")
    absent = [repr(i) for i in known if i not in given]
    if absent:
        raise DataError(f"{source}: {len(absent)} of the dataset's {len(known)} images have no "
                        f"row (no fold), e.g. {_examples(absent)}; every image of "
                        f"{manifest.source} needs one (make a new split with dermlearn data "
                        f"split)")


def split_summary(splits: pd.DataFrame) -> pd.DataFrame:
    """Per part (fold number, or ``test``): images, lesions and class shares (%); last column
    is the largest deviation (percentage points) of a class share from the whole set's."""
    whole = splits["label"].value_counts(normalize=True) * 100
    rows = {}
    for fold, part in splits.groupby("fold", sort=True):
        share = part["label"].value_counts(normalize=True).reindex(whole.index, fill_value=0) * 100
        rows["test" if fold == TEST else fold] = {"images": len(part), "lesions": part["lesion_id"].nunique(),
                      **{f"%{c}": round(v, 1) for c, v in share.items()},
                      "max_dev_pts": round(float((share - whole).abs().max()), 2)}
    rows["all"] = {"images": len(splits), "lesions": splits["lesion_id"].nunique(),
                   **{f"%{c}": round(v, 1) for c, v in whole.items()}, "max_dev_pts": 0.0}
    return pd.DataFrame.from_dict(rows, orient="index")

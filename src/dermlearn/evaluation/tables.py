"""Prediction tables in the ISIC format, read and validated, and aligned with the truth.

A predictions table has an ``image`` column and one probability column per class; the
metadata columns :data:`META_COLUMNS` (``dermlearn train`` writes ``label`` and ``fold``) may
ride along and are ignored. Image ids are stripped of whitespace and of a ``.jpg`` suffix, as
ISIC's scorer does. Every problem found is reported at once in a
:class:`~dermlearn.errors.DataError` naming the offending rows, images or columns (the first
few, with a count).
"""
from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermlearn.errors import DataError

#: Non-probability columns a predictions or truth table may carry.
META_COLUMNS = ("label", "fold", "lesion_id", "score_weight", "validation_weight")
#: How far a row's probabilities may sum from 1 (``require_sum_to_one``).
SUM_TOLERANCE = 1e-3
#: How many offending rows/images a problem names before giving a count.
MAX_NAMED = 5


def _some(items: Sequence[str], limit: int = MAX_NAMED) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more ({len(items)} in all)"
                   if len(items) > limit else "")


def _image_ids(values: pd.Series) -> pd.Series:
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return text.str.replace(r"\.jpg$", "", flags=re.IGNORECASE, regex=True)


def _read_raw(source: str | Path | pd.DataFrame
              ) -> tuple[pd.DataFrame, list[str], str, list[str], list[str]]:
    """(cells by column position, header as given, what to call the table, where each row is,
    problems with the row shapes)."""
    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True).copy()
        header = [str(c).strip() for c in frame.columns]
        frame.columns = range(len(header))
        return frame, header, "predictions table", [f"row {i}" for i in range(len(frame))], []
    path = Path(source)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            rows, lines = [], []
            for row in reader:
                if row and any(cell.strip() for cell in row):     # blank lines are skipped
                    rows.append(row)
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read predictions CSV", [str(e)]) from e
    if not header:
        raise DataError(f"{path}: cannot read predictions CSV", ["empty file: no header row"])
    width = len(header)
    ragged = [f"line {n}: {len(r)} fields" for n, r in zip(lines, rows) if len(r) != width]
    problems = [f"rows whose field count differs from the header's {width}: {_some(ragged)}"
                ] if ragged else []
    cells = [(r + [""] * width)[:width] for r in rows]
    frame = pd.DataFrame(cells, columns=range(width), dtype=object) if cells else \
        pd.DataFrame({i: pd.Series(dtype=object) for i in range(width)})
    return frame, header, str(path), [f"line {n}" for n in lines], problems


def read_predictions(source: str | Path | pd.DataFrame, classes: Sequence[str] | None = None, *,
                     require_sum_to_one: bool = True) -> pd.DataFrame:
    """Validated predictions: ``image`` (str) then the class columns (float64, in ``classes``'
    order, else the file's), one row per image; :data:`META_COLUMNS` are dropped.

    ``source`` is a CSV path or a frame. With ``classes``, the class columns must be exactly
    those (metadata columns aside); without, every non-metadata column but ``image`` is a class.
    Raises :class:`DataError` listing every problem: no ``image`` column, duplicate columns,
    missing or unexpected class columns, empty or duplicate image ids, missing or non-numeric
    probabilities, probabilities outside [0, 1] and (with ``require_sum_to_one``) rows whose
    probabilities do not sum to 1 within :data:`SUM_TOLERANCE`.
    """
    raw, header, name, rows_at, problems = _read_raw(source)
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        problems.append(f"duplicate column(s): {_some(duplicated)}")
    position = {c: header.index(c) for c in header}
    if "image" not in position:
        problems.append(f"no 'image' column (columns: {_some(header, 20)})")
    if classes is None:
        class_cols = [c for c in dict.fromkeys(header) if c != "image" and c not in META_COLUMNS]
        if not class_cols:
            problems.append("no class (probability) columns")
    else:
        class_cols = [str(c) for c in classes]
        missing = [c for c in class_cols if c not in position]
        extra = [c for c in dict.fromkeys(header)
                 if c != "image" and c not in META_COLUMNS and c not in class_cols]
        if missing:
            problems.append(f"missing class column(s): {_some(missing)}")
        if extra:
            problems.append(f"unexpected column(s) (not among the {len(class_cols)} classes "
                            f"{_some(class_cols, 10)}): {_some(extra)}")
    if "image" not in position or duplicated:
        raise DataError(f"{name}: {len(problems)} problem(s)", problems)

    images = _image_ids(raw[position["image"]])
    where = [at + (f" ({img})" if img else "") for at, img in zip(rows_at, images)]
    empty = [where[i] for i in np.flatnonzero((images == "").to_numpy())]
    if empty:
        problems.append(f"empty image id in {_some(empty)}")
    dup = images[(images != "") & images.duplicated(keep=False)]
    if len(dup):
        groups = dup.groupby(dup, sort=False).groups
        problems.append("duplicate image row(s): " + _some(
            [f"{img} ({', '.join(rows_at[i] for i in idx)})" for img, idx in groups.items()]))

    out = pd.DataFrame({"image": images})
    present = [c for c in class_cols if c in position]
    for c in present:
        cells = raw[position[c]]
        stripped = cells.map(lambda v: v.strip() if isinstance(v, str) else v)
        values = pd.to_numeric(stripped, errors="coerce").astype(float)
        blank = cells.isna() | (cells.astype(str).str.strip() == "")
        nonnum = np.flatnonzero((values.isna() & ~blank).to_numpy())
        missing_rows = np.flatnonzero(blank.to_numpy())
        if len(missing_rows):
            problems.append(f"column {c}: missing probability in "
                            + _some([where[i] for i in missing_rows]))
        if len(nonnum):
            problems.append(f"column {c}: non-numeric probability in "
                            + _some([f"{where[i]}: {cells.iat[i]!r}" for i in nonnum]))
        outside = np.flatnonzero(((values < 0) | (values > 1)).to_numpy())
        if len(outside):
            problems.append(f"column {c}: probability outside [0, 1] in "
                            + _some([f"{where[i]}: {values.iat[i]:g}" for i in outside]))
        out[c] = values.to_numpy()
    if require_sum_to_one and present and len(present) == len(class_cols):
        sums = out[present].sum(axis=1, skipna=False).to_numpy()
        off = np.flatnonzero(np.isfinite(sums) & (np.abs(sums - 1) > SUM_TOLERANCE))
        if len(off):
            problems.append(f"probabilities do not sum to 1 (tolerance {SUM_TOLERANCE:g}) in "
                            + _some([f"{where[i]}: {sums[i]:.6g}" for i in off]))
    if problems:
        raise DataError(f"{name}: {len(problems)} problem(s)", problems)
    return out


def _truth_labels(truth: Mapping[str, str] | pd.Series | pd.DataFrame,
                  problems: list[str]) -> pd.Series:
    """``{image: label}`` as a Series indexed by normalised image id."""
    if isinstance(truth, pd.DataFrame):
        frame = truth.reset_index(drop=True)
        if "image" not in frame.columns:
            problems.append("truth table has no 'image' column")
            return pd.Series(dtype=object)
        images = _image_ids(frame["image"])
        if "label" in frame.columns:
            labels = frame["label"].astype(object).where(frame["label"].notna(), "").astype(str)
        else:                                        # ISIC ground truth: one-hot class columns
            onehot = [c for c in frame.columns if c != "image" and c not in META_COLUMNS]
            values = frame[onehot].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float) > 0.5
            hot = values.sum(axis=1)
            bad = [images.iat[i] for i in np.flatnonzero(hot != 1)]
            if bad:
                problems.append(f"truth rows without exactly one class > 0.5: {_some(bad)}")
            labels = pd.Series([onehot[int(np.argmax(v))] if h == 1 else "" for v, h
                                in zip(values, hot)], dtype=object)
        dup = sorted(set(images[images.duplicated()]))
        if dup:
            problems.append(f"duplicate truth image(s): {_some(dup)}")
        return pd.Series(labels.to_numpy(), index=images.to_numpy())
    items = list(truth.items())
    images, labels = [k for k, _ in items], [v for _, v in items]
    normalised = _image_ids(pd.Series(list(images), dtype=object))
    dup = sorted(set(normalised[normalised.duplicated()]))
    if dup:
        problems.append(f"duplicate truth image(s) after normalising ids: {_some(dup)}")
    return pd.Series([str(v) for v in labels], index=normalised.to_numpy(), dtype=object)


def align_truth(predictions: pd.DataFrame, truth: Mapping[str, str] | pd.Series | pd.DataFrame,
                classes: Sequence[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, probs, image_ids)`` for the images of ``predictions`` (a :func:`read_predictions`
    frame), in its row order: ``y`` (N,) the true labels (str), or with ``classes`` their int
    indices into ``classes``; ``probs`` (N, C) float64 over ``classes`` (default: the frame's
    class columns); ``image_ids`` (N,) str.

    ``truth`` maps image id -> label: a mapping or Series, a frame with ``image`` and ``label``,
    or an ISIC ground-truth frame (``image`` + one-hot class columns). Labels need not be
    classes unless ``classes`` is given (taxonomy labels map to classes by PA). Raises
    :class:`DataError` naming truth images without a prediction, predicted images without
    truth, missing labels, labels that are not ``classes`` and duplicate truth images.
    """
    columns = [str(c) for c in (classes if classes is not None else
               [c for c in predictions.columns if c != "image" and c not in META_COLUMNS])]
    missing_cols = [c for c in ["image", *columns] if c not in predictions.columns]
    if missing_cols:
        raise DataError("predictions table lacks column(s)", [_some(missing_cols)])
    problems: list[str] = []
    labels = _truth_labels(truth, problems)
    images = _image_ids(predictions["image"]).to_numpy()
    known = set(labels.index)
    predicted = set(images)
    no_pred = [i for i in dict.fromkeys(labels.index) if i not in predicted]
    no_truth = [i for i in images if i not in known]
    if no_pred:
        problems.append(f"{len(no_pred)} truth image(s) without a prediction: {_some(no_pred)}")
    if no_truth:
        problems.append(f"{len(no_truth)} predicted image(s) without truth: {_some(no_truth)}")
    labels = labels[~labels.index.duplicated()]
    matched = [i for i in images if i in known]
    unlabelled = [img for img in matched if not str(labels[img]).strip()]
    if unlabelled:
        problems.append(f"truth image(s) without a label: {_some(unlabelled)}")
    index = {c: i for i, c in enumerate(columns)}
    if classes is not None:
        unknown = [f"{img} ({labels[img]!r})" for img in matched
                   if str(labels[img]).strip() and labels[img] not in index]
        if unknown:
            problems.append(f"truth label(s) not among the classes {_some(columns, 10)}: "
                            f"{_some(unknown)}")
    if problems:
        raise DataError(f"predictions and truth disagree: {len(problems)} problem(s)", problems)
    y_labels = np.array([str(labels[img]) for img in images], dtype=object)
    y = y_labels if classes is None else np.array([index[v] for v in y_labels], dtype=int)
    probs = predictions[columns].to_numpy(dtype=np.float64)
    return y, probs, images.astype(str)

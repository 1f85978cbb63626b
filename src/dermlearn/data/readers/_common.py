"""Helpers shared by the dataset readers: safe CSV reading, image indexing, metadata cleaning."""
from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from dermlearn.data.images import IMAGE_EXTENSIONS
from dermlearn.data.manifest import Problem
from dermlearn.data.sources import walk_files
from dermlearn.errors import DataError

_MISSING = {"", "unknown", "nan", "none", "na", "n/a", "null", "?"}


def read_table(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` with errors that name the file and the problem (encoding, syntax).

    Data rows that all end with an empty extra field (the trailing comma Excel writes) are read
    as if it were absent, instead of pandas taking the first column as the row index; an extra
    field that is not empty is an error naming its line. Wholly empty unnamed columns (a
    trailing comma on the header too) are dropped.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", **kwargs)
        if "index_col" not in kwargs and not isinstance(table.index, pd.RangeIndex):
            # More fields per data row than header names: pandas made the first column the
            # index, shifting every column by one. Accept only an empty trailing field.
            extra = table.index.nlevels
            tail = table.iloc[:, -extra:] if table.shape[1] >= extra else None
            filled = [] if tail is None else \
                np.flatnonzero(tail.apply(lambda c: c.astype(str).str.strip() != "").any(axis=1))
            if tail is None or len(filled):
                line = int(filled[0]) + 2 if len(filled) else 2
                raise DataError(f"{path}: line {line} has {len(table.columns) + extra} fields "
                                f"but the header names {len(table.columns)} columns "
                                f"({', '.join(map(str, table.columns))}); add the missing "
                                f"column name or remove the extra field")
            with warnings.catch_warnings():  # "loss of data": only empty trailing fields
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8",
                                    index_col=False, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({decode_error_location(path, exc)}); "
                        f"re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None
    empty = [c for c in table.columns if re.fullmatch(r"Unnamed: \d+", str(c))
             and not table[c].astype(str).str.strip().astype(bool).any()]
    return table.drop(columns=empty) if empty else table


#: Field separators :func:`sniff_separator` chooses between, most usual first.
SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(path: Path, sample_lines: int = 50) -> str:
    """The field separator of a delimited text file: the one of :data:`SEPARATORS` that splits
    the header into the most columns and every sampled line into as many (quotes respected);
    ``,`` when none does better."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = [line for _, line in zip(range(sample_lines), f)]
    except (OSError, UnicodeDecodeError):
        return ","  # read_table reports the problem with the file
    best, best_fields = ",", 1
    for sep in SEPARATORS:
        rows = [r for r in csv.reader(lines, delimiter=sep) if r]
        if not rows:
            continue
        fields = len(rows[0])
        # data rows may end with one empty extra field (Excel's trailing separator)
        consistent = all(len(r) == fields or (len(r) == fields + 1 and not r[-1].strip())
                         for r in rows[1:])
        if fields > best_fields and consistent:
            best, best_fields = sep, fields
    return best


def decode_error_location(path: Path, exc: UnicodeDecodeError | None = None) -> str:
    """Where ``path`` first stops being UTF-8: ``byte 0xe9 at line 12, column 5, byte offset
    1374)``. pandas decodes in chunks, so the offset in its exception is chunk-relative; the
    file is decoded again here to find the true position."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as whole:
        start, data = whole.start, whole.object
    except OSError:
        start, data = None, b""
    else:
        start = None
    if start is None:  # cannot re-locate it: report what the exception says
        if exc is None:
            return "invalid UTF-8"
        return f"byte 0x{exc.object[exc.start:exc.start + 1].hex()}"
    line = data.count(b"\n", 0, start) + 1
    column = len(data[data.rfind(b"\n", 0, start) + 1:start].decode("utf-8")) + 1
    return (f"byte 0x{data[start:start + 1].hex()} at line {line}, column {column}, "
            f"byte offset {start}")


def require_columns(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")


def find_column(table: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    """First column of ``table`` whose name matches one of ``candidates`` (case-insensitive)."""
    lower = {c.lower().strip(): c for c in table.columns}
    for name in candidates:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def index_images(root: Path, exclude_dirs: tuple[str, ...] = ()) -> tuple[dict[str, Path], list[Problem]]:
    """Map image stem -> path for every image file under ``root`` (recursive, following
    symbolic links to folders; see :func:`dermlearn.data.sources.walk_files`).

    A stem found twice is reported (the first path, in sorted order, is used).
    """
    index: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in sorted(walk_files(root, exclude_dirs=exclude_dirs)):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in index:
            problems.append(Problem("duplicate_file", f"image {path.stem!r} found twice: "
                                    f"{index[path.stem]} and {path} (using the first)",
                                    file=str(path), image_id=path.stem, severity="warning"))
            continue
        index[path.stem] = path
    return index, problems


def resolve_paths(image_ids: pd.Series, index: dict[str, Path], root: Path) -> list[str]:
    """Absolute path per image id; ids not found get the place they were expected at."""
    return [str(index[i]) if i in index else str(root / f"{i}.jpg") for i in image_ids]


def clean_text(values: pd.Series) -> pd.Series:
    """Strip, lower-case, and turn 'unknown'/empty markers into None (object dtype)."""
    out = [str(v).strip().lower() if _given(v) else "" for v in values]
    return pd.Series([v if v not in _MISSING else None for v in out], index=values.index,
                     dtype=object)


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def clean_age(values: pd.Series) -> pd.Series:
    """Age in years as float; missing markers and non-numbers become NaN."""
    return pd.to_numeric(clean_text(values), errors="coerce").astype(float)


def clean_sex(values: pd.Series) -> pd.Series:
    mapping = {"m": "male", "male": "male", "f": "female", "female": "female"}
    return clean_text(values).map(lambda v: mapping.get(v) if isinstance(v, str) else None).astype(object)


def clean_site(values: pd.Series) -> pd.Series:
    return clean_text(values).map(lambda v: re.sub(r"\s+", " ", v.replace("_", " "))
                                  if isinstance(v, str) else None).astype(object)


def source_rows(path: Path, n: int, header_lines: int = 1) -> list[str]:
    """``file:line`` for each data row (line numbers as a text editor shows them)."""
    return [f"{path.name}:{i + 1 + header_lines}" for i in range(n)]

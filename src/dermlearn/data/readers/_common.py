"""Helpers shared by the dataset readers: safe CSV reading, image indexing, metadata cleaning."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dermlearn.data.images import IMAGE_EXTENSIONS
from dermlearn.data.manifest import Problem
from dermlearn.errors import DataError

_MISSING = {"", "unknown", "nan", "none", "na", "n/a", "null", "?"}


def read_table(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` with errors that name the file and the problem (encoding, syntax)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex()
        raise DataError(f"{path}: not UTF-8 text (byte 0x{bad} at offset {exc.start}); "
                        f"re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None


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
    """Map image stem -> path for every image file under ``root`` (recursive).

    A stem found twice is reported (the first path, in sorted order, is used).
    """
    index: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if any(part in exclude_dirs for part in path.relative_to(root).parts[:-1]):
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

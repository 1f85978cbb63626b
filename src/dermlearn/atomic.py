"""Output files: atomic writes (a kill at any moment leaves the old file or the new one, never a
torn one) and checks that an output path can be written, made before the work it would hold."""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dermlearn.errors import DermlearnError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *,
                 durable: bool = True) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path``.

    ``durable``: fsync the data before the rename (so a power cut cannot leave an empty file
    under the final name); off for caches, which can always be rebuilt. The temporary file is
    removed if ``write`` fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """``value`` as indented JSON at ``path``, atomically; NumPy scalars and arrays are written
    as numbers and lists."""
    text = json.dumps(value, indent=2, default=_jsonable)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class OutputPathError(DermlearnError):
    """An output path cannot be written: a folder where a file goes, a file where a folder goes,
    or a parent that is a file or read-only. Raised before any work, so none is lost."""


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    for parent in path.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise OutputPathError(f"{path}: cannot write the output {what} there: {parent} is a "
                                  f"file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"{path}: cannot write the output {what} there: folder "
                                  f"{parent} is not writable")
        return


def check_output_file(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` can be written as a file: not an existing folder,
    and its parent a folder (or creatable as one). Returns it as a Path; creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; the output is a file: give a file name "
                              f"(e.g. one inside that folder)")
    _check_parents(path, "file")
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` can be used as an output folder: not an existing
    file, and no parent that is a file. Returns it as a Path; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: is a file; the output is a folder: give a folder name "
                              f"(it is created when missing)")
    if not path.exists():
        _check_parents(path, "folder")
    elif not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: output folder is not writable")
    return path

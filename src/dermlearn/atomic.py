"""Atomic file writes: a kill at any moment leaves the old file or the new one, never a torn one."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


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

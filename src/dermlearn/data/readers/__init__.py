"""One reader per distributed dataset layout; each has ``detect(path)`` and ``read(path, **options)``.

``read`` returns the raw table (manifest columns, ``label`` as the source wrote it) and the
problems found while reading; :func:`dermlearn.data.load` validates and canonicalises it.
"""
from __future__ import annotations

from types import ModuleType

from dermlearn.data.readers import csv, folder, ham10000, isic, ph2

#: Format name -> reader module, in auto-detection order (most specific first).
READERS: dict[str, ModuleType] = {
    "ham10000": ham10000,
    "ph2": ph2,
    "isic": isic,
    "csv": csv,
    "folder": folder,
}

__all__ = ["READERS"]

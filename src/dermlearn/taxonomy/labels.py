"""Label strings of a taxonomy: the matching key of a label and checks of id/name/alias values.

Shared by the tree (:mod:`dermlearn.taxonomy.tree`), its levels and the file parser.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from dermlearn.errors import TaxonomyError

__all__ = ["normalize_label"]

_POSSESSIVE = re.compile(r"['\u2019]s\b")
_APOSTROPHES = re.compile(r"['\u2019]")
_SEPARATORS = re.compile(r"[\W_]+")


def normalize_label(label: str) -> str:
    """Matching key of a label: ignores case, accents, a possessive ``'s``, other apostrophes,
    surrounding whitespace and every other punctuation (``_``, ``-``, ``/``, ``.``, ``(``...),
    so ``"Bowen's-disease"`` == ``"bowen disease"`` and ``"Lentigo, NOS"`` == ``"lentigo nos"``."""
    text = unicodedata.normalize("NFKD", label)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _APOSTROPHES.sub("", _POSSESSIVE.sub("", text.casefold()))
    return _SEPARATORS.sub(" ", text).strip()


def _quote_list(items: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in items)


def _check_str(value: Any, what: str) -> str:
    """``value`` as a non-empty string without surrounding whitespace, else TaxonomyError."""
    if not isinstance(value, str):
        hint = " (quote it in YAML)" if isinstance(value, (bool, int, float)) or value is None else ""
        raise TaxonomyError(f"{what} must be a string, got {type(value).__name__} {value!r}{hint}")
    if not value or value != value.strip():
        raise TaxonomyError(f"{what} must be non-empty without surrounding whitespace, got {value!r}")
    return value

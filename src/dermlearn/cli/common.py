"""Helpers shared by the command modules: option help texts, argparse types, path display."""
from __future__ import annotations

import argparse
from pathlib import Path

#: A dataset argument's help.
DATA_HELP = ("dataset path (format auto-detected) or FORMAT:PATH, FORMAT one of "
             "ham10000, isic, ph2, folder, csv")

#: ``--taxonomy``'s help: how a dataset's labels are read.
TAXONOMY_HELP = "diagnosis tree: built-in name, YAML/JSON file, or 'flat' (default: dermatology)"


def _join(folder: str, name: str = "") -> str:
    """``folder/name`` as the user would write it (no doubled slash)."""
    return str(Path(folder) / name) if name else str(Path(folder)) + "/"


def _int_at_least(minimum: int, what: str):
    """An argparse ``type`` for integers >= ``minimum`` (``what`` says so in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_threads = _int_at_least(0, "a number of threads >= 1 (or 0: all cores)")

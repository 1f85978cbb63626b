"""Helpers shared by the command modules: the parser and its help format, option help texts,
argparse types, path display."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dermlearn.errors import DermlearnError

#: A dataset argument's help.
DATA_HELP = ("dataset path (format auto-detected) or FORMAT:PATH, FORMAT one of "
             "ham10000, isic, ph2, folder, csv")

#: ``--taxonomy``'s help: how a dataset's labels are read (the default, dermatology, is shown by
#: the parser or, where the option's default is None = not given, added to the help).
TAXONOMY_HELP = "diagnosis tree: built-in name, YAML/JSON file, or 'flat'"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default as ``(default: X)`` after its help, added by the parser (so help
    texts never state it by hand); none for a default that means "not given" (None, False, an
    empty list), where the help may say what happens then, in the same ``(default: ...)`` form."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or (isinstance(default, list) and not default):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`HelpFormatter`; ``add_subparsers`` makes its commands'
    parsers of this class too, so every command and subcommand shows its defaults alike."""

    def __init__(self, *args: Any, formatter_class: type = HelpFormatter, **kwargs: Any):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


#: Reading options (``add_reading_options``) -> ``dermlearn.data.load``'s keyword.
READING_OPTIONS = ("label_col", "image_col", "id_col", "lesion_col", "sep", "aliases")
_SEPARATOR_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def add_reading_options(parser: argparse.ArgumentParser, *, lenient: bool = True) -> None:
    """The options that say how DATA is read, one group on every command that reads a dataset:
    CSV columns and separator, a user's label aliases and (``lenient``) --strict/--lenient.
    :func:`reading_options` turns them into ``load``'s keywords."""
    group = parser.add_argument_group(
        "reading the data", "how a CSV's columns and labels are read (docs/data.md)")
    group.add_argument("--label-col", metavar="COLUMN",
                       help="CSV column holding the diagnosis (default: guessed: label, dx, "
                            "diagnosis, histo_dx, ...)")
    group.add_argument("--image-col", metavar="COLUMN",
                       help="CSV column holding each image's file name or path, relative to the "
                            "CSV's folder (default: guessed: path, file, filename, ...)")
    group.add_argument("--id-col", metavar="COLUMN",
                       help="CSV column holding the image id; without an image column the id is "
                            "looked up as a file name under the CSV's folder (default: guessed: "
                            "image_id, image, isic_id, ...)")
    group.add_argument("--lesion-col", metavar="COLUMN",
                       help="CSV column holding the lesion id that keeps a lesion's images in one "
                            "split part (default: guessed: lesion_id, lesion; none: each image "
                            "its own lesion)")
    group.add_argument("--sep", type=_separator,
                       help="CSV field separator: ',', ';', '|' or 'tab' (default: sniffed from "
                            "the file)")
    group.add_argument("--aliases", metavar="FILE",
                       help="YAML file of 'your label: node_id' lines that extend the taxonomy "
                            "with your own spellings ('dermlearn taxonomy aliases' lists the "
                            "known names)")
    if lenient:
        choice = group.add_mutually_exclusive_group()
        choice.add_argument("--strict", dest="invalid", action="store_const", const="raise",
                            help="refuse data with any invalid row, naming each problem (what "
                                 "happens without --lenient)")
        choice.add_argument("--lenient", dest="invalid", action="store_const", const="drop",
                            help="drop invalid rows (missing file, unknown label, unreadable "
                                 "image, a lesion with two labels) and write what was dropped "
                                 "and why to dropped.csv")


def _separator(text: str) -> str:
    """``--sep``'s type: one character, or the name of one (``tab``)."""
    sep = _SEPARATOR_NAMES.get(text.lower(), text)
    if len(sep) != 1:
        raise argparse.ArgumentTypeError(f"expected one character or 'tab', got {text!r}")
    return sep


def reading_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reading options given on the command line, as ``load``'s keywords (not given: left
    out, so the readers' guesses apply)."""
    options = {name: getattr(args, name, None) for name in READING_OPTIONS}
    options["invalid"] = getattr(args, "invalid", None)
    return {k: v for k, v in options.items() if v is not None}


def inputs_from_args(args: argparse.Namespace, items: list[str]):
    """What ``predict``/``explain`` score: the images or dataset given, or, with reading
    options, the one dataset read with them (a Manifest; every row kept: scoring names the
    files it cannot read)."""
    options = reading_options(args)
    if not options:
        return items
    if len(items) != 1:
        flags = ", ".join(option_flag(k, v) for k, v in options.items())
        raise DermlearnError(f"{flags} say how to read one dataset (a CSV or folder); "
                             f"{len(items)} inputs were given")
    from dermlearn.data import load

    return load(items[0], invalid="keep", **options)


def option_flag(name: str, value: Any = None) -> str:
    """The command-line flag of a reading option (``label_col`` -> ``--label-col``; ``invalid``
    -> ``--lenient`` or ``--strict``), for messages."""
    if name == "invalid":
        return "--lenient" if value == "drop" else "--strict"
    return "--" + name.replace("_", "-")


def print_dropped(dropped, where: str | None = None, of: int | None = None) -> None:
    """One line saying what a lenient read left out (``dropped``: its table of image_id, ...,
    kind, reason; ``of``: the rows read), and where the list is; nothing when it is empty."""
    if len(dropped):
        from dermlearn.data.problems import dropped_kinds

        print(f"--lenient: left out {len(dropped)}{f' of {of}' if of else ''} rows "
              f"({dropped_kinds(dropped)})"
              + (f"; the list: {where}" if where else ""))


def print_dropped_file(path: Path) -> None:
    """:func:`print_dropped` for the ``dropped.csv`` a train or evaluate run wrote (if any)."""
    if path.is_file():
        import pandas as pd

        print_dropped(pd.read_csv(path), str(path))


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

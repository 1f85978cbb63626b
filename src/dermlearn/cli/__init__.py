"""``dermlearn`` command line: thin commands over the Python API.

Every user error (a :class:`~dermlearn.errors.DermlearnError`) is printed as one clear message
and exits with status 2 (1 when ``data inspect`` found problems); no traceback.

One module per command group adds its subcommands and holds their handlers; each handler
imports the heavy parts of the API it needs when it runs, so ``dermlearn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dermlearn import __version__
from dermlearn.cli.data import add_data_commands
from dermlearn.cli.demo import add_demo_command
from dermlearn.cli.evaluate import add_evaluate_commands
from dermlearn.cli.predict import add_predict_commands
from dermlearn.cli.train import add_ensemble_command, add_train_command
from dermlearn.errors import DermlearnError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``dermlearn`` argument parser, every command's ``func`` set to its handler."""
    parser = argparse.ArgumentParser(
        prog="dermlearn", description="Skin-lesion classification by transfer learning: data, "
        "taxonomy, lesion-safe splits, training, evaluation, explanation and serving.")
    parser.add_argument("--version", action="version", version=f"dermlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(commands)  # data, taxonomy
    add_train_command(commands)
    add_ensemble_command(commands)
    add_predict_commands(commands)  # predict, serve, export
    add_evaluate_commands(commands)  # evaluate, explain, embed
    add_demo_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DermlearnError as exc:
        print(f"dermlearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dermlearn: interrupted", file=sys.stderr)
        return 130

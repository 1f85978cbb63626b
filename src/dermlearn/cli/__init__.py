"""``dermlearn`` command line: thin commands over the Python API.

Every user error (a :class:`~dermlearn.errors.DermlearnError`) is printed as one clear message
and exits with status 2 (1 when ``data inspect`` found problems); no traceback. Output piped to
a reader that leaves early (``dermlearn taxonomy show | head -2``) ends quietly, with status 141
as a process killed by SIGPIPE.

One module per command group adds its subcommands and holds their handlers; each handler
imports the heavy parts of the API it needs when it runs, so ``dermlearn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from dermlearn import __version__
from dermlearn.cli.common import Parser
from dermlearn.cli.data import add_data_commands
from dermlearn.cli.demo import add_demo_command
from dermlearn.cli.evaluate import add_evaluate_commands
from dermlearn.cli.predict import add_predict_commands
from dermlearn.cli.train import add_ensemble_command, add_train_command
from dermlearn.errors import DermlearnError

__all__ = ["build_parser", "main"]

#: Exit status when stdout's reader has gone (``| head``): 128 + SIGPIPE, as the shell reports
#: for ``yes | head``.
BROKEN_PIPE_STATUS = 141


def build_parser() -> argparse.ArgumentParser:
    """The ``dermlearn`` argument parser, every command's ``func`` set to its handler."""
    parser = Parser(
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
    """Run the ``dermlearn`` command line on ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status."""
    try:
        try:
            return _run(build_parser().parse_args(argv))
        finally:
            sys.stdout.flush()  # a reader gone shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # The Python docs' recipe (signal module, "Note on SIGPIPE"): point stdout at devnull so
        # that the interpreter's final flush cannot fail again, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (replaced, e.g. in tests)
            pass
        finally:
            os.close(devnull)
        return BROKEN_PIPE_STATUS


class _WarningLines(logging.StreamHandler):
    """``dermlearn: warning: ...`` on the stderr of the moment (tests replace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("dermlearn: warning: %(message)s"))
        self.setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _show_warnings() -> None:
    """dermlearn's logged warnings (a class with fewer images than folds, calibration skipped...)
    as ``dermlearn: warning: ...`` lines on stderr; ``serve`` configures its own logging."""
    logger = logging.getLogger("dermlearn")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines())


def _run(args: argparse.Namespace) -> int:
    """The chosen command's handler, its user errors and interruptions as one line each."""
    if args.command != "serve":
        _show_warnings()
    try:
        return args.func(args)
    except DermlearnError as exc:
        print(f"dermlearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dermlearn: interrupted", file=sys.stderr)
        return 130

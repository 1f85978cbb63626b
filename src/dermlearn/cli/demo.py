"""``dermlearn demo``: the main job end to end on synthetic (or given) data."""
from __future__ import annotations

import argparse

from dermlearn.cli.common import _positive_int


def _cmd_demo(args: argparse.Namespace) -> int:
    from dermlearn.demo import run_demo

    run_demo(args.out, data=args.data, seed=args.seed, max_class_size=args.max_class_size)
    return 0


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    """The ``demo`` command."""
    demo = commands.add_parser("demo", help="run the main job end to end")
    demo.add_argument("--out", default="demo-out", help="output folder")
    demo.add_argument("--data", default=None,
                      help="real dataset to use instead of the generated synthetic one")
    demo.add_argument("--seed", type=int, default=0,
                      help="random seed (synthetic data, splits, training)")
    demo.add_argument("--max-class-size", type=_positive_int, default=None,
                      help="train on Esteva's partitioning of the taxonomy (default: one class "
                           "per diagnosis)")
    demo.set_defaults(func=_cmd_demo)

"""``dermlearn train``: fine-tune a model from the command line's recipe and flags."""
from __future__ import annotations

import argparse
from pathlib import Path

from dermlearn.cli.common import (
    DATA_HELP,
    TAXONOMY_HELP,
    _join,
    add_reading_options,
    option_flag,
    print_dropped_file,
    reading_options,
)
from dermlearn.errors import DermlearnError
from dermlearn.parallel import DEVICES


def _cmd_train(args: argparse.Namespace) -> int:
    from dermlearn.training import get_recipe, load_recipe
    from dermlearn.training.recipe_flags import recipe_overrides

    overrides = recipe_overrides(args)  # the recipe flags given (generated from the Recipe)
    if args.resume:  # the run's own settings, from its run.json: nothing else may be asked
        from dermlearn.training.runs import refuse_resume_options

        named = {"DATA": args.data, "--out": args.out, "--config": args.config,
                 "--set": args.set, "--splits": args.splits, "--feature-cache": args.feature_cache,
                 "--recipe": args.recipe != "default", "--device": args.device != "auto",
                 "--taxonomy": args.taxonomy,
                 **{option_flag(k, v): v for k, v in reading_options(args).items()}}
        refuse_resume_options(f"--resume {args.resume}",
                              [f"--{k.replace('_', '-')}" for k in overrides]
                              + [flag for flag, value in named.items() if value])
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise DermlearnError(f"--set expects FIELD=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value)
    if args.resume:
        from dermlearn.training.run import train

        metrics = train(out=args.resume, resume=True, progress=not args.quiet)
        out = args.resume
    else:
        if args.data is None or args.out is None:
            raise DermlearnError("train needs DATA and --out RUN (or --resume RUN)")
        if args.config and args.recipe != "default":
            raise DermlearnError("give the base recipe either as --recipe or as 'recipe: NAME' "
                                 f"in {args.config}, not both")
        from dermlearn.training.recipes import ENSEMBLE_RECIPES

        if args.recipe in ENSEMBLE_RECIPES and not args.config:  # several networks
            recipe = args.recipe  # with the flags as overrides of every member
        else:
            # Checked here, before the training stack is imported: a wrong value names its field.
            recipe = load_recipe(args.config, **overrides) if args.config else \
                get_recipe(args.recipe, **overrides)
            overrides = None
        from dermlearn.training.run import train

        metrics = train(args.data, args.out, recipe=recipe, overrides=overrides,
                        splits=args.splits,
                        device=args.device, progress=not args.quiet,
                        feature_cache=args.feature_cache, taxonomy=args.taxonomy,
                        data_options=reading_options(args))
        out = args.out
    if not metrics:  # a worker process of a data-parallel run: rank 0 reports
        return 0
    from dermlearn.evaluation.summary import format_metrics

    print(format_metrics(metrics))
    history = (f"   history: {_join(out, 'history.csv')}"
               if (Path(out) / "history.csv").exists() else "")
    print(f"\nmodel: {_join(out, 'model')}   metrics: {_join(out, 'metrics.json')}{history}")
    print_dropped_file(Path(out) / "dropped.csv")
    return 0


def _parse_value(text: str):
    """A ``--set`` value read as YAML: a number, true/false, null, a [list] or text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DermlearnError(f"--set value {text!r} is not valid YAML ({exc.problem})") from None


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """The ``train`` command, with the recipe-field flags of ``training.recipe_flags``."""
    train = commands.add_parser("train", help="fine-tune a pretrained CNN (transfer learning)")
    train.add_argument("data", nargs="?", help=DATA_HELP)
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--recipe", default="default",
                       help="base recipe: default | esteva2017 | benedetti2020 | ensemble3 (three "
                       "networks ensembled; see docs)")
    train.add_argument("--config", help="YAML/JSON file of recipe fields (recipe: NAME as base)")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="override any recipe field, e.g. --set label_smoothing=0")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    train.add_argument("--splits", help="use this split CSV (checked for lesion leakage)")
    train.add_argument("--device", default="auto", choices=list(DEVICES),
                       help="where to train (auto: cuda when available)")
    train.add_argument("--feature-cache", help="feature cache folder (features mode)")
    train.add_argument("--taxonomy", help=TAXONOMY_HELP + "; saved with the run and the model "
                       "(default: dermatology)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_reading_options(train)
    from dermlearn.training.recipe_flags import add_recipe_flags

    add_recipe_flags(train.add_argument_group(
        "recipe fields", "override the base recipe's value (defaults shown: the default "
        "recipe's); every other field: --set FIELD=VALUE"))
    train.set_defaults(func=_cmd_train)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from dermlearn.training.ensemble import ensemble_runs

    metrics = ensemble_runs(args.runs, args.out, progress=not args.quiet)
    from dermlearn.evaluation.summary import format_metrics

    weights = ", ".join(f"{run} {w:.3f}" for run, w in zip(metrics["ensemble"]["runs"],
                                                          metrics["ensemble"]["weights"]))
    print(f"member weights: {weights}")
    print(format_metrics(metrics))
    print(f"\nmodel: {_join(args.out, 'model')}   metrics: {_join(args.out, 'metrics.json')}")
    return 0


def add_ensemble_command(commands: argparse._SubParsersAction) -> None:
    """The ``ensemble`` command: one model from runs trained on the same split."""
    ens = commands.add_parser("ensemble", help="one model from several runs on the same split "
                              "(weights and temperature fitted on their shared hold-out)")
    ens.add_argument("runs", nargs="+", metavar="RUN",
                     help="run folders (at least two; other backbones, seeds or input sizes of "
                          "one aspect ratio: each member keeps its own size)")
    ens.add_argument("--out", required=True, help="folder to create: a run-like folder whose "
                     "model/ is the ensemble")
    ens.add_argument("--quiet", action="store_true", help="no progress bars")
    ens.set_defaults(func=_cmd_ensemble)

"""Run records: what a run was asked to do (``run.json``), its data, splits and classes, and the
checks that a new run or a resumed one can go ahead -- all before any file is written.

A run is started with a dataset (a path or ``FORMAT:PATH``, or a loaded Manifest) and, or not,
a split table; it is resumed from ``RUN/run.json`` alone. :func:`plan_new_run` and
:func:`plan_resumed_run` give the same :class:`RunPlan`, which :func:`prepare` turns into the
manifest, splits, folds and classes of the run, and :func:`write_run_record` saves.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.atomic import atomic_write, atomic_write_json, check_output_dir
from dermlearn.data import Manifest, load
from dermlearn.data.loading import check_data_options, parse_spec
from dermlearn.errors import DataError, DermlearnError
from dermlearn.parallel import resolve_device
from dermlearn.splits import (
    TEST,
    check_no_leakage,
    check_split_rows,
    load_splits,
    make_splits,
    save_splits,
    warn_short_classes,
)
from dermlearn.taxonomy import Taxonomy, assign_classes, partition
from dermlearn.training.recipes import Recipe, get_recipe

__all__ = ["FoldData", "RunError", "RunPlan", "RunSetup", "absolute_data_spec",
           "plan_new_run", "plan_resumed_run", "prepare", "refuse_resume_options",
           "training_classes", "write_run_record"]

RUN_FILE = "run.json"
#: A Manifest given to ``train`` is saved in the run as this CSV, so that the run can resume.
DATA_FILE = "data.csv"
SPLITS_FILE = "splits.csv"
#: The rows a lenient read of the data dropped, with the reason for each (when any were).
DROPPED_FILE = "dropped.csv"


class RunError(DermlearnError):
    """A run directory cannot be created or resumed."""


@dataclasses.dataclass
class FoldData:
    """One fold's training and validation rows (indices into the manifest); ``fold`` is the
    fold id, or ``"refit"`` for the final model trained on every training image."""

    fold: int | str
    train_rows: np.ndarray
    val_rows: np.ndarray


@dataclasses.dataclass
class RunPlan:
    """What a run was asked for: its folder, data, splits, recipe and settings."""

    out: Path
    data: str | Manifest                 # dataset spec (absolute path), or a Manifest given
    recipe: Recipe
    device: str
    splits: str | pd.DataFrame | None = None   # split file (absolute), a table, or automatic
    feature_cache: str | None = None
    taxonomy: str | dict | Taxonomy | None = None
    resume: bool = False
    #: how to read ``data`` (``load``'s options: columns, separator, aliases, lenient...)
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunSetup:
    """A run ready to train: its manifest, split table, folds, classes and targets (-1 for the
    test part)."""

    plan: RunPlan
    manifest: Manifest
    splits: pd.DataFrame
    folds: list[FoldData]
    classes: list[str]
    targets: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """Rows a model of the run may train or be validated on (not the test part)."""
        return np.flatnonzero(self.splits["fold"].to_numpy() != TEST)


def refuse_resume_options(run: str | Path, given: Sequence[str]) -> None:
    """The one check that a resumed run is asked for nothing it would ignore: it continues with
    the data, splits, recipe and settings of its ``run.json``. ``given``: the options given, as
    the caller names them (``--epochs`` on the command line, ``data`` in Python)."""
    if given:
        raise RunError(f"{run}: a resumed run continues with the data, splits and recipe "
                       f"recorded in its run.json; drop {', '.join(given)} (or start a new run "
                       f"with another --out)")


def absolute_data_spec(spec: str | Path) -> str:
    """``spec`` (a path or ``FORMAT:PATH``) with its path made absolute, the prefix kept as
    written: what ``run.json`` records, so that the run means the same data from any folder."""
    fmt, path = parse_spec(spec)
    absolute = str(path.resolve())
    return f"{str(spec).partition(':')[0]}:{absolute}" if fmt else absolute


def plan_new_run(data: str | Path | Manifest | None, out: Path, *, recipe: str | Recipe,
                 overrides: dict[str, Any] | None, splits: str | Path | pd.DataFrame | None,
                 device: str, feature_cache: str | Path | None,
                 taxonomy: str | Path | Taxonomy | None,
                 data_options: dict[str, Any] | None = None) -> RunPlan:
    """A new run in ``out``, checked: the data exists, the recipe is valid, ``out`` holds no run."""
    from dermlearn.parallel import env_rank

    if data is None:
        raise RunError("no dataset given (data=)")
    if not isinstance(data, (str, Path, Manifest)):
        raise RunError(f"data must be a dataset path (or FORMAT:PATH) or a Manifest, not a "
                       f"{type(data).__name__}")
    if splits is not None and not isinstance(splits, (str, Path, pd.DataFrame)):
        raise RunError(f"splits must be a split CSV path or a DataFrame (dermlearn.make_splits), "
                       f"not a {type(splits).__name__}")
    recipe_obj = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    recipe_obj = recipe_obj.replace(**(overrides or {}))
    if recipe_obj.teacher:  # absolute, as the data: the run means the same teacher anywhere
        from dermlearn.inference.predictor import model_directory

        teacher = model_directory(Path(recipe_obj.teacher).expanduser().resolve())
        if not (teacher / "config.json").is_file():
            raise RunError(f"teacher {recipe_obj.teacher}: not a model or run folder (no "
                           f"config.json)")
        recipe_obj = recipe_obj.replace(teacher=str(teacher))
    if (out / RUN_FILE).exists() and env_rank(recipe_obj.devices) == 0:
        raise RunError(f"{out} already holds a run; use --resume {out} to continue it, or "
                       f"choose another --out")
    if isinstance(data, Manifest) and taxonomy is not None:
        raise RunError("a Manifest brings its own taxonomy: drop taxonomy=")
    options = check_data_options(data_options)
    if isinstance(data, Manifest) and options:
        raise RunError(f"a Manifest is read already: drop data_options ({', '.join(options)})")
    if "aliases" in options and not isinstance(options["aliases"], dict):
        options["aliases"] = str(Path(options["aliases"]).expanduser().resolve())
    # Absolute, so that the run means the same files from any folder (--resume, and
    # evaluation's check that it does not score the model's own training images).
    return RunPlan(
        out=out, data=data if isinstance(data, Manifest) else absolute_data_spec(data),
        recipe=recipe_obj, device=resolve_device(device),
        splits=splits if isinstance(splits, pd.DataFrame) or splits is None
        else str(Path(splits).expanduser().resolve()),
        feature_cache=str(Path(feature_cache).expanduser().resolve()) if feature_cache else None,
        taxonomy=taxonomy, data_options=options)


def plan_resumed_run(out: Path) -> RunPlan:
    """The plan recorded in ``out/run.json`` (RunError when there is none, or it is unreadable,
    or its data has gone)."""
    run_file = out / RUN_FILE
    if not run_file.exists():
        raise RunError(f"{out}: nothing to resume (no run.json)")
    try:
        state = json.loads(run_file.read_text())
        recipe = Recipe(**state["recipe"])
        device = state["device"]
    except (ValueError, KeyError, TypeError, DermlearnError) as exc:
        raise RunError(f"{run_file}: not a readable run record ({exc!r})") from None
    if "splits" not in state and not (out / SPLITS_FILE).exists():
        # A run.json of an older dermlearn, written before its splits were resolved: whether
        # it was given --splits is unknown, and nothing was trained yet.
        raise RunError(f"{run_file}: the run stopped before its splits were made and does not "
                       f"record a --splits file; start it again (remove {out} or choose "
                       f"another --out)")
    return RunPlan(out=out, data=_resumed_data(state, run_file), recipe=recipe, device=device,
                   splits=state.get("splits"), feature_cache=state.get("feature_cache"),
                   # runs before 2026-12-03 recorded no tree: the default
                   taxonomy=state.get("taxonomy") or "dermatology", resume=True,
                   # the tree recorded holds the aliases a file added
                   data_options={k: v for k, v in state.get("data_options", {}).items()
                                 if k != "aliases"})


def _resumed_data(state: dict, run_file: Path) -> str:
    """The dataset of a resumed run. Runs written before run.json held absolute paths recorded
    the path as given, relative to the folder ``train`` was started in."""
    data = state.get("data")
    if not data:
        raise RunError(f"{run_file}: no 'data' recorded; cannot resume")
    _, path = parse_spec(data)
    if not path.exists():
        if not path.is_absolute():
            raise RunError(f"{run_file}: the run's data {data!r} is a path relative to the folder "
                           f"the run was started in and is not found from {Path.cwd()}; resume "
                           f"from that folder, or write its absolute path into {run_file}")
        raise RunError(f"{run_file}: the run's data {data} is no longer there (moved?); put it "
                       f"back, or write its new path into {run_file}")
    return data


def _split_table(manifest: Manifest, plan: RunPlan, reuse_saved: bool) -> pd.DataFrame:
    """The run's split table: its saved ``splits.csv`` when ``reuse_saved`` (a resumed run, or
    a worker process reading what rank 0 wrote) and it exists, else the splits given, else
    lesion-grouped automatic splits. Nothing is written here."""
    recipe, saved = plan.recipe, plan.out / SPLITS_FILE
    made = None
    if reuse_saved and saved.exists():
        table = load_splits(saved, manifest)
    elif isinstance(plan.splits, pd.DataFrame):
        table = plan.splits.copy()
        check_split_rows(table, manifest, source="the split table given")
        table["fold"] = table["fold"].astype(np.int64)
    elif plan.splits is not None:
        table = load_splits(plan.splits, manifest)
    else:
        n_parts = recipe.folds if recipe.folds > 1 else max(2, int(round(1 / recipe.val_fraction)))
        try:
            table = made = make_splits(manifest, n_parts, group="lesion", seed=recipe.seed)
        except DataError as exc:
            asked = (f"--folds {recipe.folds}" if recipe.folds > 1 else
                     f"val_fraction {recipe.val_fraction} (1 part in {n_parts})")
            raise RunError(f"{asked} needs at least {n_parts} lesions: {exc}") from None
    table = table.set_index("image_id").loc[manifest.table["image_id"]].reset_index()
    check_no_leakage(table, manifest=manifest)
    if made is None:  # make_splits warned already
        warn_short_classes(table.assign(label=manifest.table["label"].to_numpy()))
    return table


def _folds(table: pd.DataFrame, recipe: Recipe) -> list[FoldData]:
    fold = table["fold"].to_numpy()
    parts = sorted(set(fold.tolist()) - {TEST})
    usable = fold != TEST
    if recipe.folds > 1 and len(parts) != recipe.folds:
        raise RunError(f"the split file has {len(parts)} folds but the recipe asks for "
                       f"{recipe.folds}")
    chosen = parts if recipe.folds > 1 else parts[:1]
    return [FoldData(int(k), np.flatnonzero(usable & (fold != k)), np.flatnonzero(fold == k))
            for k in chosen]


def training_classes(manifest: Manifest, rows: np.ndarray, recipe: Recipe) -> list[str]:
    """Leaf labels present in ``rows`` or, with ``max_class_size``, Esteva's partitioning."""
    labels = manifest.table["label"].to_numpy()[rows]
    counts = pd.Series(labels).value_counts().to_dict()
    if recipe.max_class_size:
        return partition(manifest.taxonomy, counts, recipe.max_class_size)
    return [c for c in manifest.classes if c in counts]


def prepare(plan: RunPlan, rank: int = 0) -> RunSetup:
    """Read the data and resolve splits, folds, classes and targets: everything is checked
    before the run folder is written, so a bad input leaves no run.json behind that would
    refuse the corrected command."""
    if isinstance(plan.data, Manifest):
        manifest = plan.data
    else:
        manifest = load(plan.data, taxonomy="dermatology" if plan.taxonomy is None
                        else plan.taxonomy, **plan.data_options)
    table = _split_table(manifest, plan, reuse_saved=plan.resume or rank != 0)
    folds = _folds(table, plan.recipe)
    usable = np.flatnonzero(table["fold"].to_numpy() != TEST)
    classes = training_classes(manifest, usable, plan.recipe)
    if len(classes) < 2:
        raise RunError(f"{manifest.source}: the training images hold {len(classes)} class(es) "
                       f"({', '.join(classes) or 'none'}); a classifier needs at least two")
    targets = np.full(len(manifest), -1, dtype=np.int64)
    targets[usable] = [classes.index(c) for c in assign_classes(
        manifest.taxonomy, manifest.table["label"].to_numpy()[usable], classes)]
    return RunSetup(plan, manifest, table, folds, classes, targets)


def write_run_record(setup: RunSetup) -> None:
    """Create the run folder and write its splits and (new runs) its data copy, ``config.json``
    and, last, ``run.json``: the file that marks a run ``--resume`` can continue. Atomic: a
    kill leaves each file whole or absent."""
    plan = setup.plan
    out = check_output_dir(plan.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the run folder ({exc.strerror or exc})") from None
    atomic_write(out / SPLITS_FILE, lambda tmp: save_splits(setup.splits, tmp))
    if plan.resume:
        return
    setup.manifest.write_dropped(out / DROPPED_FILE)  # rows a lenient read left out, and why
    data, splits = plan.data, plan.splits
    if isinstance(data, Manifest):  # saved, so that --resume reads exactly these images
        columns = ["image_id", "path", "label", "lesion_id", "patient_id", "age", "sex", "site",
                   "label_source"]
        copy = data.table[[c for c in columns if c in data.table]].copy()
        copy["path"] = [str(Path(p).resolve()) for p in copy["path"]]
        atomic_write(out / DATA_FILE, lambda tmp: copy.to_csv(tmp, index=False))
        data = f"csv:{(out / DATA_FILE).resolve()}"
    if isinstance(splits, pd.DataFrame):
        splits = str((out / SPLITS_FILE).resolve())
    atomic_write_json(out / "config.json", plan.recipe.to_dict())
    atomic_write_json(out / RUN_FILE, {
        "data": data, "splits": splits, "device": plan.device, "recipe": plan.recipe.to_dict(),
        "feature_cache": plan.feature_cache, "taxonomy": setup.manifest.taxonomy.to_dict(),
        "data_options": plan.data_options,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S")})

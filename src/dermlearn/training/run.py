"""``train()``: one call from a dataset to a saved, validated model directory.

A run directory ``RUN`` holds:

* ``run.json`` -- what was asked (data, recipe, device), so ``--resume RUN`` can continue;
* ``config.json`` -- the resolved recipe; ``splits.csv`` -- the lesion-grouped folds used;
  ``data.csv`` -- the images of a Manifest given in Python (so the run can resume);
* ``checkpoints/fold_K/`` -- Lightning checkpoints (atomic; ``last.ckpt`` for resuming);
* ``model/`` -- ``model.safetensors`` + ``config.json`` (an ensemble of ``members/K`` with
  ``--folds K``); ``history.csv``; ``val_predictions.csv`` (ISIC format plus ``label``,
  ``fold``); ``metrics.json`` (accuracy, balanced accuracy, per-class AUC, taxonomy levels);
* with ``--refit``: ``selection/`` holds the model(s) the validation figures come from, and
  ``model/`` the final model, trained on every training image for the epochs they chose.

The steps: a new run or a resumed one (:mod:`.runs`), each fold fitted with Lightning
(:mod:`.fit`) or, in features mode, a head on cached features (:mod:`.feature_fit`), then the
finish: ensemble, calibration, OOD screen, metrics (:mod:`.finish`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.atomic import check_output_dir
from dermlearn.data import Manifest
from dermlearn.models.lesion_classifier import read_config, save_model
from dermlearn.parallel import env_rank
from dermlearn.taxonomy import Taxonomy
from dermlearn.training.finish import (
    evaluate_predictions,
    finish_run,
    headline,
    read_fold_predictions,
    write_fold_predictions,
)
from dermlearn.training.recipes import ENSEMBLE_RECIPES, Recipe
from dermlearn.training.runs import (
    FoldData,
    RunError,
    RunSetup,
    plan_new_run,
    plan_resumed_run,
    prepare,
    refuse_resume_options,
    training_classes,
    write_run_record,
)

__all__ = ["RunError", "train", "training_classes"]


def train(data: str | Path | Manifest | None = None, out: str | Path = "runs/run", *,
          recipe: str | Recipe = "default", overrides: dict[str, Any] | None = None,
          splits: str | Path | pd.DataFrame | None = None, device: str = "auto",
          resume: bool = False, progress: bool = True,
          feature_cache: str | Path | None = None,
          taxonomy: str | Path | Taxonomy | None = None,
          data_options: dict[str, Any] | None = None) -> dict:
    """Train (or, with ``resume=True``, continue training) a model; returns ``metrics.json``.

    ``recipe`` may also name an ensemble recipe (``ensemble3``): each member is trained as a
    run of its own in ``out/runs/NAME`` on one split, then :func:`~dermlearn.training.ensemble.
    ensemble_runs` combines them into ``out`` (run the same call again to continue one that
    stopped). ``data``: a dataset path (or ``FORMAT:PATH``) or a loaded Manifest; ``splits``: a split
    CSV or a DataFrame (:func:`~dermlearn.splits.make_splits`), default lesion-grouped
    automatic splits. ``recipe`` is a name from :data:`~dermlearn.training.recipes.RECIPES` or
    a Recipe; ``overrides`` replace recipe fields. ``taxonomy`` reads the labels (built-in
    name, YAML/JSON file or ``"flat"``; default ``"dermatology"``); the tree is saved with the
    run and the model. ``data_options`` are :func:`~dermlearn.data.load`'s reading options
    (``label_col``, ``sep``, ``aliases``, ``invalid="drop"`` to leave out invalid rows, listed
    in ``RUN/dropped.csv``...), recorded in ``run.json`` so that a resumed run reads the data
    the same way. With ``recipe.folds > 1`` one model per lesion-grouped fold is trained,
    saved as an ensemble, and metrics are given per fold, as mean +- sd and on the pooled
    out-of-fold predictions.
    """
    out = check_output_dir(Path(out))  # before any work: not a file, nor under one
    if isinstance(recipe, str) and recipe in ENSEMBLE_RECIPES:
        if resume:
            raise RunError(f"{out}: an ensemble recipe resumes by running its train command "
                           f"again (finished members are kept)")
        return _train_ensemble_recipe(recipe, data, out, overrides=overrides, splits=splits,
                                      device=device, progress=progress,
                                      feature_cache=feature_cache, taxonomy=taxonomy,
                                      data_options=data_options)
    if resume:
        refuse_resume_options(out, [name for name, given in (
            ("data", data is not None), ("recipe", not (isinstance(recipe, str)
                                                        and recipe == "default")),
            ("overrides", bool(overrides)), ("splits", splits is not None),
            ("device", device != "auto"), ("feature_cache", feature_cache is not None),
            ("taxonomy", taxonomy is not None), ("data_options", bool(data_options)))
            if given])
        plan = plan_resumed_run(out)
    else:
        plan = plan_new_run(data, out, recipe=recipe, overrides=overrides, splits=splits,
                            device=device, feature_cache=feature_cache, taxonomy=taxonomy,
                            data_options=data_options)
    # Data-parallel runs (recipe.devices x num_nodes > 1) execute this function in every
    # process; only global rank 0 writes files. Features mode runs in one process.
    rank = env_rank(plan.recipe.devices)
    if rank != 0 and plan.recipe.mode == "features":
        return {}
    setup = prepare(plan, rank)
    if rank == 0:
        write_run_record(setup)
    frames, per_fold = _train_folds(setup, progress)
    if plan.recipe.refit:
        _refit(setup, progress)
    if rank != 0:
        return {}  # a worker process of a data-parallel run; rank 0 reports
    return finish_run(setup, frames, per_fold, progress)


def _train_folds(setup: RunSetup, progress: bool) -> tuple[list[pd.DataFrame], dict[int, dict]]:
    """Fit every fold not finished yet (a restarted run keeps the ones it saved); returns each
    fold's validation predictions and metrics (nothing in a data-parallel worker process)."""
    from dermlearn.training.feature_fit import fit_fold_features, run_features
    from dermlearn.training.fit import fit_fold

    out, recipe, manifest, classes = setup.plan.out, setup.plan.recipe, setup.manifest, \
        setup.classes
    features = run_features(setup, progress) if recipe.mode == "features" else None
    root = selection_dir(setup)
    member_dir = root / "members" if len(setup.folds) > 1 else None
    frames, per_fold = [], {}
    for fold in setup.folds:
        pred_path = out / f"val_predictions_fold_{fold.fold}.csv"
        model_dir = member_dir / str(fold.fold) if member_dir else root
        if pred_path.exists() and (model_dir / "config.json").exists():
            frame = read_fold_predictions(pred_path)  # finished before a restart
        else:
            if features is not None:
                model, config, probs = fit_fold_features(setup, fold, *features)
            else:
                model, config, probs = fit_fold(setup, fold, progress)
            if probs is None:  # a worker process of a data-parallel run: rank 0 writes
                continue
            config["fold"] = fold.fold
            frame = write_fold_predictions(pred_path, manifest, fold, probs, classes)
            config["validation"] = headline(evaluate_predictions(frame, classes, manifest))
            save_model(model, model_dir, config)
        frames.append(frame)
        per_fold[fold.fold] = evaluate_predictions(frame, classes, manifest)
    return frames, per_fold


def selection_dir(setup: RunSetup) -> Path:
    """Where the models whose validation predictions measure the run are saved: ``model/``,
    or ``selection/`` when a refit model takes ``model/``."""
    return setup.plan.out / ("selection" if setup.plan.recipe.refit else "model")


def refit_epochs(setup: RunSetup) -> int:
    """The epochs a refit trains for: the median, over the folds, of the epochs the selected
    weights had trained (the best epoch by validation, 1-based)."""
    root = selection_dir(setup)
    dirs = [root / "members" / str(f.fold) for f in setup.folds] if len(setup.folds) > 1 \
        else [root]
    chosen = [read_config(d).get("selected_epochs") for d in dirs]
    if any(c is None for c in chosen):
        raise RunError(f"{root}: the selection model(s) record no selected_epochs (trained by "
                       f"an older dermlearn); start the run again to refit it")
    return max(1, int(np.floor(np.median(chosen) + 0.5)))


def _refit(setup: RunSetup, progress: bool) -> None:
    """Train the final model on every training image (the validation part included) into
    ``model/``; a refit finished before a restart is kept."""
    from dermlearn.training.feature_fit import fit_fold_features, run_features
    from dermlearn.training.fit import fit_fold

    out, recipe = setup.plan.out, setup.plan.recipe
    model_dir = out / "model"
    if (model_dir / "config.json").exists() and read_config(model_dir).get("refit"):
        return
    fold = FoldData("refit", setup.usable, np.zeros(0, dtype=np.int64))
    if recipe.mode == "features":
        model, config, _ = fit_fold_features(setup, fold, *run_features(setup, progress))
        epochs = None
    else:
        epochs = refit_epochs(setup)
        model, config, probs = fit_fold(setup, fold, progress, recipe=recipe.replace(
            epochs=epochs, early_stopping=None, second_round_epochs=0))
        if probs is None:  # a worker process of a data-parallel run: rank 0 writes
            return
    config["refit"] = {"epochs": epochs, "n_images": int(len(setup.usable)),
                       "selection": str(selection_dir(setup).relative_to(out))}
    save_model(model, model_dir, config)


def _train_ensemble_recipe(name: str, data, out: Path, *, overrides: dict[str, Any] | None,
                           splits, device: str, progress: bool, feature_cache,
                           taxonomy, data_options: dict[str, Any] | None) -> dict:
    """Train each member of ensemble recipe ``name`` (``overrides`` applied to all) on one split
    and combine them; members already finished are kept, a stopped one is resumed."""
    from dermlearn.training.ensemble import ensemble_runs

    if (out / "model").exists() and (out / "metrics.json").exists():
        raise RunError(f"{out} already holds a finished ensemble; choose another --out")
    runs = []
    for member, fields in ENSEMBLE_RECIPES[name].items():
        run = out / "runs" / member
        if not (run / "metrics.json").exists():
            if (run / "run.json").exists():
                train(out=run, resume=True, progress=progress)
            else:
                train(data, run, overrides={**fields, **(overrides or {})}, splits=splits,
                      device=device, progress=progress, feature_cache=feature_cache,
                      taxonomy=taxonomy, data_options=data_options)
        splits = splits if splits is not None else run / "splits.csv"  # one split for all
        runs.append(run)
    if (out / "model").exists():  # an ensembling that stopped: its copies are made again
        shutil.rmtree(out / "model")
    return ensemble_runs(runs, out, progress=progress)

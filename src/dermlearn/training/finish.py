"""The end of a run: validation predictions and metrics, the fold ensemble's config, temperature
calibration and the out-of-distribution screen -- each file written atomically.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.atomic import atomic_write, atomic_write_json
from dermlearn.data import Manifest
from dermlearn.evaluation.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from dermlearn.evaluation.levels import level_metrics
from dermlearn.evaluation.metrics import classification_metrics
from dermlearn.models.lesion_classifier import read_config, share_common_weights, update_config
from dermlearn.taxonomy import assign_classes
from dermlearn.training.fit import training_data
from dermlearn.training.recipes import Recipe
from dermlearn.training.runs import FoldData, RunSetup

__all__ = ["MIN_CALIBRATION_IMAGES", "OOD_FIT_IMAGES", "evaluate_predictions", "finish_run",
           "headline", "read_fold_predictions", "write_fold_predictions"]

log = logging.getLogger(__name__)

#: Training images (at most) whose features set the out-of-distribution screen.
OOD_FIT_IMAGES = 1000
#: Fewer validation images than this leave the model uncalibrated (temperature 1).
MIN_CALIBRATION_IMAGES = 100


def write_fold_predictions(path: Path, manifest: Manifest, fold: FoldData,
                           probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """ISIC format plus ``label`` and ``fold`` for a fold's validation images, atomically."""
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "image", manifest.table["image_id"].to_numpy()[fold.val_rows])
    frame["label"] = manifest.table["label"].to_numpy()[fold.val_rows]
    frame["fold"] = fold.fold
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return frame


def read_fold_predictions(path: Path) -> pd.DataFrame:
    """A fold's predictions written before a restart."""
    return pd.read_csv(path, dtype={"image": str})


def evaluate_predictions(frame: pd.DataFrame, classes: list[str], manifest: Manifest) -> dict:
    """Metrics of a validation-predictions frame (columns ``classes`` + ``label``)."""
    probs = frame[classes].to_numpy(dtype=np.float64)
    targets = np.array([classes.index(c) for c in
                        assign_classes(manifest.taxonomy, frame["label"], classes)])
    metrics = classification_metrics(targets, probs, classes)
    metrics["levels"] = level_metrics(probs, frame["label"].tolist(), classes, manifest.taxonomy)
    return metrics


def headline(metrics: dict) -> dict:
    """The figures a model's config and the fold table keep."""
    out = {k: metrics[k] for k in ("n", "accuracy", "balanced_accuracy", "auc_macro")}
    out["per_class_auc"] = {c: v["auc"] for c, v in metrics["per_class"].items()}
    for level, m in metrics.get("levels", {}).items():
        if "auc" in m:
            out[f"{level}_auc"] = m["auc"]
    return out


def _summarise_folds(per_fold: dict[int, dict]) -> dict:
    keys = ["accuracy", "balanced_accuracy", "auc_macro"]
    summary = {k: {"mean": float(np.mean([m[k] for m in per_fold.values()])),
                   "sd": float(np.std([m[k] for m in per_fold.values()], ddof=1))
                   if len(per_fold) > 1 else 0.0} for k in keys}
    levels = set.intersection(*(set(m["levels"]) for m in per_fold.values()))
    for level in sorted(levels):
        aucs = [m["levels"][level].get("auc") for m in per_fold.values()]
        if all(a is not None for a in aucs):
            summary[f"{level}_auc"] = {"mean": float(np.mean(aucs)),
                                       "sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0}
    return summary


def finish_run(setup: RunSetup, frames: list[pd.DataFrame], per_fold: dict[int, dict],
               progress: bool) -> dict[str, Any]:
    """Pool the folds' predictions, write the ensemble config, calibrate, fit the OOD screen
    and write ``metrics.json``; returns the metrics. With a refit, the validation figures
    measure the selection models (``selection/``), an estimate of the refit procedure; the
    temperature they fit and the OOD screen go to the refit model in ``model/``."""
    out, recipe, manifest, classes = setup.plan.out, setup.plan.recipe, setup.manifest, \
        setup.classes
    predictions = pd.concat(frames, ignore_index=True)
    atomic_write(out / "val_predictions.csv",
                 lambda tmp: predictions.to_csv(tmp, index=False))
    metrics = evaluate_predictions(predictions, classes, manifest)
    metrics.update({"classes": classes, "recipe": recipe.name, "backbone": recipe.backbone,
                    "mode": recipe.mode, "n_train_images": int(len(setup.usable)),
                    "validation": "out-of-fold" if len(setup.folds) > 1
                    else "lesion-grouped hold-out"})
    selection = out / ("selection" if recipe.refit else "model")
    if len(setup.folds) > 1:
        metrics["folds"] = {str(k): headline(m) for k, m in per_fold.items()}
        metrics["cv"] = _summarise_folds(per_fold)
        _write_ensemble(selection, setup.folds, manifest)
    if recipe.refit:
        metrics["refit"] = {**read_config(out / "model")["refit"],
                            "note": "the final model (model/) trained on every training image; "
                                    "the validation figures are those of the selection "
                                    "model(s) in selection/, an estimate of this procedure"}
    metrics["calibration"] = _calibrate(out / "model", predictions, classes, manifest)
    training_rows = setup.usable if recipe.refit else setup.folds[0].train_rows
    metrics["ood"] = _fit_ood(out / "model", manifest, training_rows, recipe, progress)
    update_config(out / "model", validation=headline(metrics))
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _write_ensemble(model_dir: Path, folds: list[FoldData], manifest: Manifest) -> None:
    """``model/config.json`` describing an average over ``members/K`` (no weights of its own);
    its training data is every image some member learned from, each validation image being
    held out by one member (out-of-fold)."""
    first = read_config(model_dir / "members" / str(folds[0].fold))
    config = {k: v for k, v in first.items() if k not in ("fold", "validation")}
    config["ensemble"] = [f"members/{f.fold}" for f in folds]
    config["training_data"] = training_data(
        manifest, np.unique(np.concatenate([f.train_rows for f in folds])),
        np.unique(np.concatenate([f.val_rows for f in folds])))
    config["training_data"]["validation"] = "out-of-fold"
    atomic_write_json(model_dir / "config.json", config)
    if config.get("recipe", {}).get("mode") == "features":  # one frozen backbone for all folds
        share_common_weights(model_dir, config["ensemble"])


def _calibrate(model_dir: Path, frame: pd.DataFrame, classes: list[str],
               manifest: Manifest) -> dict[str, Any]:
    """Temperature scaling fitted on the validation predictions, saved in the model's config
    (the Predictor divides logits by it). Validation probabilities come from T = 1 models, so
    their logs are the logits up to a per-row constant, which softmax ignores. Too few images,
    or a fit stuck at a bound of :data:`TEMPERATURE_BOUNDS` (separable data), keep T = 1."""
    probs = frame[classes].to_numpy(dtype=np.float64)
    targets = np.array([classes.index(c) for c in
                        assign_classes(manifest.taxonomy, frame["label"], classes)])
    result: dict[str, Any] = {"ece": expected_calibration_error(targets, probs)}
    if len(frame) < MIN_CALIBRATION_IMAGES:
        log.warning(f"calibration skipped: {len(frame)} validation images, fewer than the "
                    f"{MIN_CALIBRATION_IMAGES} needed to fit a temperature; the model's "
                    f"probabilities are uncalibrated (temperature 1); validate on more images "
                    f"(--folds K scores every image once, or a larger --val-fraction)")
        return {**result, "temperature": 1.0,
                "skipped": f"{len(frame)} validation images < {MIN_CALIBRATION_IMAGES}"}
    temperature = fit_temperature(np.log(np.clip(probs, 1e-12, 1.0)), targets)
    if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] * 0.99:
        log.warning(f"calibration skipped: the fitted temperature {temperature:.3g} is at a "
                    f"bound (the validation images are separated perfectly or not at all); "
                    f"the model's probabilities are uncalibrated (temperature 1)")
        return {**result, "temperature": 1.0,
                "skipped": f"fitted temperature {temperature:.3g} at a bound"}
    update_config(model_dir, temperature=temperature)
    return {**result, "temperature": temperature,
            "ece_calibrated": expected_calibration_error(
                targets, apply_temperature(probs, temperature)),
            "note": "ece_calibrated is measured on the validation predictions the temperature "
                    "was fitted on, so it is optimistic; evaluate other images for an "
                    "unbiased ECE"}


def _fit_ood(model_dir: Path, manifest: Manifest, rows: np.ndarray, recipe: Recipe,
             progress: bool) -> dict[str, Any]:
    """Fit and save the service's out-of-distribution screen (:mod:`dermlearn.inference.ood`) on
    up to :data:`OOD_FIT_IMAGES` training images (seeded choice, lesion-grouped thresholds)."""
    from dermlearn.inference import Predictor
    from dermlearn.inference.ood import fit_ood

    rng = np.random.default_rng(recipe.seed)
    chosen = np.sort(rng.permutation(rows)[:OOD_FIT_IMAGES])
    table = manifest.table.iloc[chosen]
    detector = fit_ood(Predictor.load(model_dir), table["path"].astype(str).tolist(),
                       labels=table["label"].astype(str).tolist(),
                       groups=table["lesion_id"].astype(str).tolist()
                       if table["lesion_id"].notna().all() else None,
                       num_workers=recipe.num_workers, batch_size=recipe.batch_size,
                       progress=progress, seed=recipe.seed)
    detector.save(model_dir)
    return {"n_images": int(len(chosen)), "percentile": 95.0}

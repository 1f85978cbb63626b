"""Evaluate probabilities, a predictions CSV, or a model on a dataset; write metrics and a report.

>>> metrics = evaluate_probabilities(probs, labels, classes, taxonomy)          # pure, in memory
>>> metrics = evaluate_predictions_csv("preds.csv", "../shared/data/ph2", out="eval/")
>>> metrics = evaluate_model("runs/ph2/model", "../shared/data/ph2", out="eval/")  # + report.html

``metrics.json`` holds ``accuracy``, ``balanced_accuracy``, ``auc_macro``, ``per_class``
(label -> sensitivity, specificity, ppv, npv, auc, auc_sens_80, ap, ...), ``levels`` (each
taxonomy level reachable by PA; the binary ones also ``auc``, ``auc_ci``, ROC and operating
points), ``ece`` and ``calibration``, ``subgroups`` and, with readers, their operating points.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.atomic import atomic_write_json, check_output_dir
from dermlearn.data import Manifest, load
from dermlearn.evaluation.binary import (
    BINARY_LEVELS,
    binary_report,
    fold_summary,
    load_readers,
    readers_vs_curve,
    roc_summary,
)
from dermlearn.evaluation.calibration import expected_calibration_error, reliability_bins
from dermlearn.evaluation.cases import case_table
from dermlearn.evaluation.figures import (
    case_figures,
    case_summary,
    explanation_figures,
    make_figures,
)
from dermlearn.evaluation.levels import binary_scores, level_metrics
from dermlearn.evaluation.locked import locked_test, resolve_locked
from dermlearn.evaluation.metrics import classification_metrics
from dermlearn.evaluation.subgroups import subgroup_metrics
from dermlearn.evaluation.tables import align_truth, read_predictions
from dermlearn.taxonomy import Taxonomy, assign_classes

#: Readers whose CSV row names no task are drawn on this task's ROC.
DEFAULT_READER_TASK = "malignant_vs_benign"


def evaluate_probabilities(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                           taxonomy: Taxonomy, *, metadata: pd.DataFrame | None = None,
                           readers: pd.DataFrame | None = None, n_boot: int = 1000,
                           seed: int = 0) -> dict[str, Any]:
    """All metrics of ``probs`` (N, C) over ``classes`` against true taxonomy ``labels`` (N,).

    ``metadata`` (N rows; optional columns sex, age, site) adds subgroup metrics; ``readers``
    (name, sensitivity, specificity[, task]) are placed against the binary ROC curves.
    """
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    labels = list(labels)
    targets = np.array([classes.index(c) for c in assign_classes(taxonomy, labels, classes)])
    metrics = classification_metrics(targets, probs, classes)
    for c, name in enumerate(classes):
        if 0 < np.sum(targets == c) < len(targets):
            metrics["per_class"][name]["roc"] = roc_summary(targets == c, probs[:, c])
    metrics["ece"] = expected_calibration_error(targets, probs)
    bins = reliability_bins(targets, probs)
    metrics["calibration"] = {"ece": metrics["ece"], "bins": {
        k: [None if np.isnan(v) else float(v) for v in values] for k, values in bins.items()}}
    levels = level_metrics(probs, labels, classes, taxonomy)
    for level in BINARY_LEVELS:
        if level not in levels:
            continue
        y, score = binary_scores(probs, labels, classes, taxonomy, level)
        report = binary_report(y, score, n_boot=n_boot, seed=seed)
        levels[level].update(report)
        if readers is not None and len(readers):
            task = readers["task"].fillna(DEFAULT_READER_TASK) if "task" in readers \
                else pd.Series(DEFAULT_READER_TASK, index=readers.index)
            mine = readers[task.to_numpy() == level]
            if len(mine):
                levels[level]["readers"] = readers_vs_curve(
                    report["roc"]["fpr"], report["roc"]["tpr"], mine)
    metrics["levels"] = levels
    if metadata is not None:
        metrics["subgroups"] = subgroup_metrics(targets, probs, classes,
                                                metadata.reset_index(drop=True))
    return metrics


# -- inputs -----------------------------------------------------------------------------------
def _metadata(manifest: Manifest) -> pd.DataFrame:
    return manifest.table[[c for c in ("sex", "age", "site") if c in manifest.table]]


def read_truth_csv(path: str | Path, taxonomy: str | Path | Taxonomy = "dermatology") -> Manifest:
    """A label-only Manifest (no images needed) from a ground-truth CSV: ``image`` (or
    ``image_id``) and either a ``label``/``diagnosis``/``dx`` column or one-hot class columns as
    in the ISIC challenges (``MEL, NV, ...``). Labels are resolved through ``taxonomy`` (as in
    :func:`~dermlearn.data.load`: a tree, or ``"flat"`` for the labels as they are)."""
    from dermlearn.errors import DataError
    from dermlearn.taxonomy import load_taxonomy

    table = pd.read_csv(path, dtype={"image": str, "image_id": str})
    ids = table["image"] if "image" in table else table.get("image_id")
    if ids is None:
        raise DataError(f"{path}: a ground-truth CSV needs an 'image' (or 'image_id') column")
    label_col = next((c for c in ("label", "diagnosis", "dx") if c in table), None)
    if label_col:
        raw = table[label_col].astype(str)
    else:
        onehot = table.drop(columns=[c for c in ("image", "image_id", "score_weight",
                                                 "validation_weight") if c in table])
        if onehot.empty or not onehot.isin([0, 1, 0.0, 1.0]).all().all() or \
                (onehot.sum(axis=1) != 1).any():
            raise DataError(f"{path}: no label column and the class columns are not one-hot "
                            f"(each row needs exactly one 1)")
        raw = onehot.idxmax(axis=1)
    taxonomy = (Taxonomy.flat(sorted({str(v).strip() for v in raw}))
                if isinstance(taxonomy, str) and taxonomy == "flat" else load_taxonomy(taxonomy))
    labels = [taxonomy.resolve(v, context=f"{path} row {i + 2}") for i, v in enumerate(raw)]
    from dermlearn.data.manifest import COLUMNS

    frame = pd.DataFrame({c: None for c in COLUMNS}, index=range(len(table)))
    frame["image_id"], frame["label"] = ids.astype(str).to_numpy(), labels
    return Manifest(frame, taxonomy=taxonomy, source=str(path), format="truth-csv")


def _write_dropped(manifest: Manifest, out: str | Path | None) -> None:
    """``out/dropped.csv``: the rows a lenient read left out, and why (when there were any)."""
    if out is not None and len(manifest.dropped):
        Path(out).mkdir(parents=True, exist_ok=True)
        manifest.write_dropped(Path(out) / "dropped.csv")


def evaluate_predictions_csv(predictions: str | Path | pd.DataFrame, data: str | Path | Manifest,
                             *, out: str | Path | None = None,
                             taxonomy: str | Path | Taxonomy | None = None,
                             readers: str | Path | None = None, n_boot: int = 1000,
                             seed: int = 0, report: bool = True,
                             locked: Mapping[str, Any] | None = None,
                             data_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metrics of an ISIC-format predictions CSV (``image`` + one column per class) against the
    truth: a dataset (its labels and metadata) or a ground-truth CSV (:func:`read_truth_csv`);
    with ``out``, also ``metrics.json``, figures and ``report.html``. ``taxonomy`` reads the
    truth's labels (default ``"dermatology"``; a Manifest brings its own). ``locked``: the
    locked-threshold test's options (see :func:`evaluate_model`); ``data_options``: how to
    read a dataset ``data`` (:func:`~dermlearn.data.load`'s options)."""
    if out is not None:
        check_output_dir(out)
    if isinstance(data, Manifest):
        manifest = data
    elif Path(str(data)).is_file() and str(data).lower().endswith(".csv"):
        manifest = read_truth_csv(data, taxonomy or "dermatology")
    else:
        manifest = load(data, taxonomy=taxonomy or "dermatology", **(data_options or {}))
        _write_dropped(manifest, out)
    frame = read_predictions(predictions)
    classes = [c for c in frame.columns if c != "image"]
    truth = manifest.table.set_index("image_id")["label"]
    y_labels, probs, ids = align_truth(frame, truth)
    sub = manifest.select(ids)
    plan = resolve_locked(locked, manifest.taxonomy, sub)
    metrics = evaluate_probabilities(probs, y_labels, classes, manifest.taxonomy,
                                     metadata=_metadata(sub),
                                     readers=load_readers(readers) if readers else None,
                                     n_boot=n_boot, seed=seed)
    if plan:
        metrics["locked"] = locked_test(probs, y_labels, classes, manifest.taxonomy, sub,
                                        n_boot=n_boot, seed=seed, **plan)
    metrics["source"] = {"predictions": str(predictions) if not isinstance(
        predictions, pd.DataFrame) else "(frame)", "data": manifest.source}
    if out is not None:
        write_outputs(out, metrics, frame=frame.assign(label=y_labels), manifest=sub,
                      predictor=None, summary=metrics["source"], report=report)
    return metrics


def evaluate_model(model: str | Path, data: str | Path | Manifest, out: str | Path, *,
                   part: str = "auto", tta: int = 1, readers: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0, explain: str | None = "saliency",
                   examples_per_class: int = 2, embed: bool = True, batch_size: int = 32,
                   num_workers: int = 2, progress: bool = True,
                   locked: Mapping[str, Any] | None = None,
                   data_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Predict ``data`` with ``model`` and write metrics, figures and ``report.html`` to ``out``.

    ``locked``: a locked-threshold test (:mod:`dermlearn.evaluation.locked`), a mapping with
    ``task`` (default ``melanoma_vs_rest``), ``threshold`` or ``threshold_from`` + ``target``
    (e.g. ``"sensitivity=0.95"``), and optionally ``aggregate`` (``lesion``/``patient``),
    ``aggregate_by`` (``max``/``mean``) and ``subgroups`` (column names).

    ``part`` chooses the images (:func:`~dermlearn.inference.unseen.unseen_images`): by
    default every image the model never trained on; the report says which. ``data_options``:
    how to read ``data`` (:func:`~dermlearn.data.load`'s options: columns, separator, a user's
    label aliases, ``invalid="drop"``), with the model's own taxonomy."""
    from dermlearn.inference import Predictor
    from dermlearn.inference.prediction import checked_views
    from dermlearn.inference.unseen import score_unseen, unseen_images

    check_output_dir(out)
    predictor = Predictor.load(model)
    checked_views(predictor, tta)
    manifest = data if isinstance(data, Manifest) else load(
        data, taxonomy=predictor.taxonomy, **(data_options or {}))
    _write_dropped(manifest, out)
    scope = unseen_images(predictor, manifest, part)
    sub = manifest.subset(scope.rows)
    # Every label must name one training class before a minute of scoring (a coarser label
    # that spans several classes cannot be scored).
    assign_classes(predictor.taxonomy, sub.labels, predictor.classes)
    plan = resolve_locked(locked, predictor.taxonomy, sub)  # a wrong option stops here
    probs = score_unseen(predictor, manifest, scope, tta=tta, batch_size=batch_size,
                         num_workers=num_workers, progress=progress)
    frame = pd.DataFrame(probs, columns=predictor.classes)
    frame.insert(0, "image", sub.image_ids)
    metrics = evaluate_probabilities(probs, sub.labels, predictor.classes, predictor.taxonomy,
                                     metadata=_metadata(sub),
                                     readers=load_readers(readers) if readers else None,
                                     n_boot=n_boot, seed=seed)
    if plan:
        metrics["locked"] = locked_test(probs, sub.labels, predictor.classes, predictor.taxonomy,
                                        sub, n_boot=n_boot, seed=seed, **plan)
    metrics["calibration"].update(temperature_provenance(predictor, sub.image_ids))
    if predictor.config.get("ensemble") and scope.part == "val":
        metrics["cv"] = fold_metrics(probs, sub.labels, predictor.classes, predictor.taxonomy,
                                     np.array(scope.fold))
    summary = run_summary(predictor.directory, predictor.config, manifest, scope.description,
                          tta)
    metrics["source"] = summary
    write_outputs(out, metrics, frame=frame.assign(label=sub.labels), manifest=sub,
                  predictor=predictor, summary=summary, explain=explain,
                  examples_per_class=examples_per_class, embed=embed, seed=seed,
                  progress=progress)
    return metrics


def fold_metrics(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                 taxonomy: Taxonomy, folds: np.ndarray) -> dict[str, dict]:
    """Mean ± sd over folds (Esteva's tables) of accuracy, balanced accuracy, macro AUC and the
    binary tasks' AUC."""
    labels = np.asarray(labels, dtype=object)
    values: dict[str, list] = {}
    for fold in sorted(set(folds)):
        rows = np.flatnonzero(folds == fold)
        m = evaluate_probabilities(probs[rows], labels[rows].tolist(), classes, taxonomy,
                                   n_boot=0)
        for key in ("accuracy", "balanced_accuracy", "auc_macro"):
            values.setdefault(key, []).append(m.get(key))
        for level in BINARY_LEVELS:
            values.setdefault(f"{level}_auc", []).append(m["levels"].get(level, {}).get("auc"))
    return {k: fold_summary(v) for k, v in values.items()}


def temperature_provenance(predictor: Any, image_ids: Sequence[str]) -> dict[str, Any]:
    """The model's temperature and how many of the evaluated images it was fitted on (the run's
    validation predictions): an ECE measured on those images is optimistic."""
    temperature = float(getattr(predictor, "temperature", 1.0))
    fitted = set()
    directory = getattr(predictor, "directory", None)
    if directory is not None and temperature != 1.0:
        path = Path(directory).parent / "val_predictions.csv"
        if path.is_file():
            fitted = set(pd.read_csv(path, usecols=["image"], dtype={"image": str})["image"])
    return {"temperature": temperature,
            "temperature_fitted_on_these": int(len(fitted & set(map(str, image_ids))))}


def run_summary(model_dir: Path, config: Mapping[str, Any], manifest: Manifest,
                described: str, tta: int) -> dict[str, Any]:
    """What was evaluated, how the model was made: the report's first table."""
    run = model_dir.parent
    run_info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    recipe = run_info.get("recipe", {})
    return {
        "model": str(model_dir),
        "backbone": config.get("backbone"),
        "classes": ", ".join(config.get("classes", [])),
        "ensemble members": len(config.get("ensemble", [])) or 1,
        "recipe": recipe.get("name"),
        "mode": recipe.get("mode"),
        "image size (px)": config.get("preprocess", {}).get("input_size", [None])[-1],
        "trained on": run_info.get("data"),
        "split": (f"lesion-grouped, {recipe.get('folds')} folds" if recipe.get("folds", 1) > 1
                  else f"lesion-grouped hold-out, {recipe.get('val_fraction')} of lesions")
        if recipe else None,
        "temperature": config.get("temperature"),
        "evaluated on": f"{manifest.source} ({manifest.format}): {described}",
        "test-time augmentation views": tta,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


# -- outputs ----------------------------------------------------------------------------------
def write_outputs(out: str | Path, metrics: dict[str, Any], *, frame: pd.DataFrame,
                  manifest: Manifest, predictor: Any | None, summary: Mapping[str, Any],
                  explain: str | None = None, examples_per_class: int = 2, embed: bool = False,
                  seed: int = 0, progress: bool = False, report: bool = True) -> Path:
    """``metrics.json``, ``predictions.csv`` (ISIC format plus ``label`` and ``lesion_id``, for
    ``dermlearn compare``), ``cases.csv`` (every image, the worst errors first), PNG figures
    and (``report``) ``report.html``."""
    from dermlearn.evaluation.report_builder import build_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "lesion_id" in manifest.table and manifest.table["lesion_id"].notna().all():
        frame = frame.assign(lesion_id=manifest.table["lesion_id"].astype(str).to_numpy())
    frame.to_csv(out / "predictions.csv", index=False, float_format="%.6f")
    figures = make_figures(out, metrics)
    classes = [c for c in frame.columns if c not in ("image", "label", "lesion_id")]
    cases = case_table(frame["image"], frame["label"], frame[classes].to_numpy(float), classes,
                       manifest.taxonomy, frame.get("lesion_id"))
    cases.to_csv(out / "cases.csv", index=False, float_format="%.6f")
    metrics["cases"] = case_summary(cases)
    figures["cases"] = case_figures(out, cases, manifest, predictor, explain)
    if predictor is not None and embed and len(manifest) >= 5:
        from dermlearn.explain import embed as embed_images

        written = embed_images(predictor, manifest, out, seed=seed, progress=progress,
                               probs=frame[predictor.classes].to_numpy())
        figures["tsne"] = [(written["by_class"], "t-SNE of penultimate features by class"),
                           (written["by_correctness"], "t-SNE by correctness")]
    if predictor is not None and explain:
        figures.update(explanation_figures(out, predictor, manifest, frame, explain,
                                           examples_per_class, metrics))
    atomic_write_json(out / "metrics.json", metrics)
    if report:
        build_report(out, metrics, figures, summary)
    return out / "metrics.json"

"""What is known about a trained model, from its own files: the one source that the service's
model card and the model report (TRIPOD+AI / CLAIM items) both read.

>>> facts = model_facts("runs/ham/model")
>>> facts["training_data"]["n_images"], facts["validation"]["balanced_accuracy"]
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["INTENDED_USE", "LIMITATIONS", "model_facts", "training_summary",
           "validation_summary"]


INTENDED_USE = (
    "Decision support for clinicians and researchers: a second opinion on a dermoscopic or "
    "close-up clinical photograph of a single skin lesion. The output is a probability over "
    "the model's diagnostic classes, not a diagnosis; it does not replace examination, "
    "dermoscopy by a trained clinician, or histopathology. Not a medical device.")

LIMITATIONS = [
    "Not a diagnosis. Any lesion that worries a patient or a clinician needs a clinical "
    "examination, whatever the score.",
    "The model only knows the classes it was trained on; a lesion of another kind (e.g. a rare "
    "tumour, an inflammatory disease) is still forced into one of them.",
    "Trained on the dataset named in the model card; performance on other cameras, "
    "dermatoscopes, body sites, populations and skin types (darker skin types are "
    "under-represented in public dermoscopy data) can be considerably lower.",
    "Validation figures are from a lesion-grouped split of the same collection, not from a "
    "prospective clinical study.",
    "The out-of-distribution check flags photos unlike the training images (e.g. not a skin "
    "lesion, wrong modality); it is a statistical screen, not a guarantee: a flag means the "
    "prediction should be disregarded, no flag does not make it trustworthy.",
    "The malignancy risk is the summed probability of the malignant classes (PA); it is only "
    "as calibrated as the temperature fitted on validation data (temperature 1 means no "
    "calibration was fitted).",
    "Heatmaps (saliency, Grad-CAM) show which pixels influenced the score; they are not a "
    "segmentation of the lesion and can highlight artefacts (rulers, hair, ink marks).",
]


def validation_summary(directory: str | Path | None, config: Mapping[str, Any]
                       ) -> dict[str, Any] | None:
    """Validation metrics from the model config, else the run's ``metrics.json`` (headline)."""
    if config.get("validation"):
        return {"source": "model config", **dict(config["validation"])}
    if directory is None:
        return None
    path = Path(directory).parent / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    out: dict[str, Any] = {"source": "metrics.json", "protocol": metrics.get("validation")}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) or "ci" in key.lower():
            out[key] = value
    if isinstance(metrics.get("per_class"), dict):
        out["per_class_auc"] = {c: v.get("auc") for c, v in metrics["per_class"].items()
                                if isinstance(v, dict)}
    for level, m in (metrics.get("levels") or {}).items():
        if isinstance(m, dict) and m.get("auc") is not None:
            out[f"{level}_auc"] = m["auc"]
    if "cv" in metrics:
        out["cv"] = metrics["cv"]
    return out


def training_summary(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The images the model learned from (the dataset's name, not the training machine's
    file layout)."""
    training = dict(config.get("training_data") or {})
    if "source" in training:
        training["source"] = Path(str(training["source"])).name
    return training or None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def model_facts(model: str | Path) -> dict[str, Any]:
    """Everything the model's folder and its run record say: config (backbone, weights,
    classes, preprocessing, temperature, recipe), training data, the run's data, splits and
    validation, the OOD screen, intended use and limitations."""
    from dermlearn.models.lesion_classifier import read_config

    directory = Path(model)
    if (directory / "model" / "config.json").is_file():
        directory = directory / "model"
    config = read_config(directory)
    run = directory.parent
    state = _read_json(run / "run.json")
    splits = {}
    if (run / "splits.csv").is_file():
        import pandas as pd

        from dermlearn.splits import TEST, fold_ids

        table = pd.read_csv(run / "splits.csv", dtype=str)
        folds = fold_ids(table["fold"])
        splits = {"n_images": int(len(table)), "n_lesions": int(table["lesion_id"].nunique())
                  if "lesion_id" in table else None,
                  "folds": int(len(set(folds.tolist()) - {TEST})),
                  "test_part": int((folds == TEST).sum()),
                  "grouped_by": "patient" if "patient_id" in table else "lesion"}
    recipe = config.get("recipe") or state.get("recipe") or {}
    return {"directory": str(directory), "config": config, "recipe": recipe,
            "data": state.get("data"), "run_started": state.get("started"),
            "ensemble_of_runs": config.get("ensemble_of_runs"), "splits": splits,
            "training_data": training_summary(config),
            "validation": validation_summary(directory, config),
            "run_metrics": _read_json(run / "metrics.json"),
            "ood": _read_json(directory / "ood.json"),
            "intended_use": INTENDED_USE, "limitations": list(LIMITATIONS)}

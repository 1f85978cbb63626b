"""What a served model is for: the model card (identity from
:mod:`dermlearn.inference.identity`, classes, levels, training data, validation, intended use
and limitations).

>>> card = build_model_card(Predictor.load("runs/ham/model"))
>>> card["validation"]["balanced_accuracy"], card["limitations"][0]
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dermlearn import __version__
from dermlearn.inference.identity import available_levels, model_identity
from dermlearn.models.lesion_classifier import METADATA_INPUTS

if TYPE_CHECKING:  # pragma: no cover
    from dermlearn.inference.predictor import Predictor

__all__ = ["INTENDED_USE", "LIMITATIONS", "build_model_card"]


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


def _validation(predictor: Predictor) -> dict[str, Any] | None:
    """Validation metrics from the model config, else the run's ``metrics.json`` (headline)."""
    config = predictor.config
    if config.get("validation"):
        return {"source": "model config", **dict(config["validation"])}
    if predictor.directory is None:
        return None
    path = predictor.directory.parent / "metrics.json"
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


def build_model_card(predictor: Predictor, *, ood: Mapping[str, Any] | None = None,
                     backend: str | None = None) -> dict[str, Any]:
    """A JSON-safe model card: identity, classes, taxonomy levels, preprocessing, training data
    summary, validation metrics (with CIs where recorded), intended use and limitations."""
    config = predictor.config
    model_id, version = model_identity(predictor.directory, config)
    names = config.get("class_names") or {}
    training = dict(config.get("training_data") or {})
    if "source" in training:  # the dataset's name, not the training machine's file layout
        training["source"] = Path(str(training["source"])).name
    return {
        "model_id": model_id,
        "version": version,
        "dermlearn_version": __version__,
        "trained_with": config.get("dermlearn_version"),
        "backend": backend,
        "backbone": config.get("backbone"),
        "ensemble_members": len(predictor.members),
        "classes": [{"id": c, "name": names.get(c) or predictor.taxonomy.display_name(c)}
                    for c in predictor.classes],
        "taxonomy": predictor.taxonomy.name,
        "levels": available_levels(predictor),
        "preprocess": predictor.preprocess.to_dict(),
        "temperature": predictor.temperature,
        "patient_inputs": ({"fields": list(METADATA_INPUTS),
                            "sites": list(predictor.metadata_encoder.sites)}
                           if predictor.metadata_encoder is not None else None),
        "training_data": training or None,
        "validation": _validation(predictor),
        "ood": dict(ood) if ood is not None else {"available": False},
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
    }

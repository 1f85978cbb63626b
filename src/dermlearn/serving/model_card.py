"""What a served model is for: the model card (identity from
:mod:`dermlearn.inference.identity`; training data, validation, intended use and limitations
from :mod:`dermlearn.evaluation.model_facts`, which the model report reads too).

>>> card = build_model_card(Predictor.load("runs/ham/model"))
>>> card["validation"]["balanced_accuracy"], card["limitations"][0]
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dermlearn import __version__
from dermlearn.evaluation.model_facts import (
    INTENDED_USE,
    LIMITATIONS,
    training_summary,
    validation_summary,
)
from dermlearn.inference.identity import available_levels, model_identity
from dermlearn.models.lesion_classifier import METADATA_INPUTS

if TYPE_CHECKING:  # pragma: no cover
    from dermlearn.inference.predictor import Predictor

__all__ = ["build_model_card"]


def build_model_card(predictor: Predictor, *, ood: Mapping[str, Any] | None = None,
                     backend: str | None = None) -> dict[str, Any]:
    """A JSON-safe model card: identity, classes, taxonomy levels, preprocessing, training data
    summary, validation metrics (with CIs where recorded), intended use and limitations."""
    config = predictor.config
    model_id, version = model_identity(predictor.directory, config)
    names = config.get("class_names") or {}
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
        "training_data": training_summary(config),
        "validation": validation_summary(predictor.directory, config),
        "ood": dict(ood) if ood is not None else {"available": False},
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
    }

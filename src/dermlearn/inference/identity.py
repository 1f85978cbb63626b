"""Who a saved model is: its id and content-addressed version, and the digests that key what is
derived from it (the ONNX export cache, the out-of-distribution statistics).

The version is a SHA-256 over the weights and the parts of ``config.json`` that change the
model's output, so two copies of the same model report the same version and a retrained model
a new one.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dermlearn.errors import TaxonomyError
from dermlearn.models.lesion_classifier import WEIGHTS_FILE

if TYPE_CHECKING:  # pragma: no cover
    from dermlearn.inference.predictor import Predictor

__all__ = ["SERVED_LEVELS", "available_levels", "feature_digest", "model_identity",
           "source_digest"]

#: Config fields that change what the model computes (the rest is documentation).
_OUTPUT_FIELDS = ("backbone", "classes", "preprocess", "temperature", "head", "metadata",
                  "ensemble")
#: Output fields newer than the first models: part of the digest only when a model sets them,
#: so older models keep their versions.
_LATER_OUTPUT_FIELDS = ("ensemble_weights",)

#: Config fields that change the features (what the OOD statistics depend on): not the
#: temperature, which calibration may change after training.
_FEATURE_FIELDS = ("backbone", "preprocess", "ensemble")

#: Taxonomy levels the service and ONNX export report (via PA) when the model's classes allow.
SERVED_LEVELS = ("malignant_vs_benign", "melanoma_vs_rest", "esteva3")


def source_digest(directory: str | Path | None, config: Mapping[str, Any],
                  fields: tuple[str, ...] = _OUTPUT_FIELDS) -> str:
    """SHA-256 hex digest of a model's weights and output-relevant config ``fields``."""
    h = hashlib.sha256()
    described = {k: config.get(k) for k in fields}
    if fields == _OUTPUT_FIELDS:
        described.update({k: config[k] for k in _LATER_OUTPUT_FIELDS if config.get(k)})
    h.update(json.dumps(described, sort_keys=True, default=str).encode())
    if directory is not None:
        directory = Path(directory)
        members = list(config.get("ensemble") or []) or ["."]
        shared: set[Path] = set()
        for member in members:
            h.update(member.encode())
            _hash_file(h, directory / member / WEIGHTS_FILE)
            member_config = directory / member / "config.json"
            if member != "." and member_config.is_file():  # tensors stored once for all members
                name = json.loads(member_config.read_text()).get("shared_weights")
                if name:
                    shared.add((directory / member / name).resolve())
        for path in sorted(shared):
            _hash_file(h, path)
    return h.hexdigest()


def _hash_file(h, path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)


def feature_digest(directory: str | Path | None, config: Mapping[str, Any]) -> str:
    """Digest of what the penultimate/stage features depend on (weights, backbone,
    preprocessing; not the temperature): the key of a model's OOD statistics."""
    return "sha256:" + source_digest(directory, config, _FEATURE_FIELDS)[:16]


def model_identity(directory: str | Path | None, config: Mapping[str, Any]) -> tuple[str, str]:
    """(model id, version). The id is ``config["model_id"]`` or the run's folder name; the
    version is ``config["model_version"]`` or ``sha256:`` + 12 hex digits of
    :func:`source_digest`."""
    model_id = config.get("model_id")
    if not model_id:
        if directory is not None:
            directory = Path(directory).resolve()
            model_id = directory.parent.name if directory.name == "model" else directory.name
        else:
            model_id = f"{config.get('backbone', 'model')}"
    version = config.get("model_version") or f"sha256:{source_digest(directory, config)[:12]}"
    return str(model_id), str(version)


def available_levels(predictor: Predictor, levels: tuple[str, ...] = SERVED_LEVELS
                     ) -> dict[str, list[str]]:
    """``{level: groups}`` for the taxonomy levels the model's classes can be aggregated to."""
    uniform = np.full((1, len(predictor.classes)), 1.0 / len(predictor.classes))
    out = {}
    for level in levels:
        try:
            _, groups = predictor.to_level(uniform, level)
        except TaxonomyError:
            continue
        out[level] = list(groups)
    return out

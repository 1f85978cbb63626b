"""dermlearn: dermatologist-level skin-lesion classification by transfer learning.

The front door, as usable from a notebook as the CLI is from a shell::

    import dermlearn as dl
    manifest = dl.load("../shared/data/ph2")                       # a validated Manifest
    splits = dl.make_splits(manifest, 5, group="lesion", seed=0)   # lesion-safe folds (int)
    metrics = dl.train(manifest, "runs/ph2", splits=splits, overrides={"epochs": 3})
    table = dl.predict("runs/ph2/model", "photos/")                # ISIC-format table
    metrics = dl.evaluate("runs/ph2/model", manifest, "eval/")     # + eval/report.html
    predictor = dl.Predictor.load("runs/ph2/model")

The package is laid out in layers, each importing only those below it: ``errors``; the small
helpers ``atomic``, ``cache_dirs``, ``parallel``; ``taxonomy`` (tree, partitioning, PA);
``data`` (readers, Manifest, safe decoding, the image Dataset); ``splits``; ``models``;
``inference`` (Predictor, the one scoring loop, backends, ONNX export, OOD screen, distributed
prediction); ``explain``; ``evaluation``; ``training``; ``serving`` (HTTP only); ``demo``;
``cli``. The names below are imported on first use, so ``import dermlearn`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Front-door name -> the module that defines it.
_EXPORTS = {
    "load": "dermlearn.data.loading",
    "Manifest": "dermlearn.data.manifest",
    "make_splits": "dermlearn.splits",
    "train": "dermlearn.training.run",
    "Predictor": "dermlearn.inference.predictor",
    "predict": "dermlearn.inference.prediction",
    "evaluate": "dermlearn.evaluation.evaluate",
}
#: Front-door names defined under another name.
_ALIASES = {"evaluate": "evaluate_model"}

__all__ = ["Manifest", "Predictor", "__version__", "evaluate", "load", "make_splits", "predict",
           "train"]

if TYPE_CHECKING:  # pragma: no cover
    from dermlearn.data.loading import load
    from dermlearn.data.manifest import Manifest
    from dermlearn.evaluation.evaluate import evaluate_model as evaluate
    from dermlearn.inference.prediction import predict
    from dermlearn.inference.predictor import Predictor
    from dermlearn.splits import make_splits
    from dermlearn.training.run import train


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), _ALIASES.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dermlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Inference: what scores images with a saved model.

* :class:`Predictor` -- a saved model (one network or a fold ensemble), its preprocessing, PA;
* :func:`score_images` -- the one loop over image files that every scoring path runs;
* :func:`predict` -- an ISIC-format table for image files, folders, datasets or a Manifest;
* :func:`unseen_images` -- which images a model may be scored on (never its training images);
* backends (PyTorch, ONNX Runtime), ONNX export, the out-of-distribution screen, and
  distributed, resumable prediction (Lightning Fabric).

Submodules that need ONNX or Lightning are imported on first use.
"""
from dermlearn.inference.inputs import ResolvedInputs, resolve_inputs
from dermlearn.inference.prediction import predict
from dermlearn.inference.predictor import Predictor, ensemble_probabilities, model_directory
from dermlearn.inference.scoring import Scores, UnreadableImagesError, score_images

__all__ = ["Predictor", "ResolvedInputs", "Scores", "UnreadableImagesError", "create_backend",
           "ensemble_probabilities", "ensure_onnx", "export_onnx", "fit_ood", "load_ood",
           "model_directory", "predict", "predict_distributed", "resolve_inputs",
           "score_images", "unseen_images"]

_LAZY = {"create_backend": "dermlearn.inference.backends",
         "ensure_onnx": "dermlearn.inference.onnx_export",
         "export_onnx": "dermlearn.inference.onnx_export",
         "fit_ood": "dermlearn.inference.ood", "load_ood": "dermlearn.inference.ood",
         "predict_distributed": "dermlearn.inference.distributed",
         "unseen_images": "dermlearn.inference.unseen"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dermlearn.inference' has no attribute {name!r}")

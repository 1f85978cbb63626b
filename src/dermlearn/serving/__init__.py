"""Serving: batch prediction, inference backends (PyTorch, ONNX Runtime), ONNX export, the
out-of-distribution screen, the model card and the web service (``create_app``, ``serve``;
imported on first use so that batch prediction does not load FastAPI)."""
from dermlearn.serving.backends import BACKENDS, OnnxBackend, TorchBackend, create_backend
from dermlearn.serving.model_card import build_model_card, model_identity
from dermlearn.serving.onnx_export import ensure_onnx, export_onnx
from dermlearn.serving.ood import OODDetector, fit_ood, load_ood
from dermlearn.serving.predictor import Predictor, UnreadableImagesError, predict, resolve_inputs

__all__ = ["BACKENDS", "OODDetector", "OnnxBackend", "Predictor", "ServiceConfig",
           "TorchBackend", "UnreadableImagesError", "build_model_card", "create_app",
           "create_backend", "ensure_onnx", "export_onnx", "fit_ood", "load_ood",
           "model_identity", "predict", "resolve_inputs", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from dermlearn.serving.app import create_app

        return create_app
    if name == "ServiceConfig":
        from dermlearn.serving.service import ServiceConfig

        return ServiceConfig
    if name == "serve":
        from dermlearn.serving.server import serve

        return serve
    raise AttributeError(f"module 'dermlearn.serving' has no attribute {name!r}")

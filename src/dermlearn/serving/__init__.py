"""Serving: inference backends and batch prediction (the web service and ONNX export build on it)."""
from dermlearn.serving.predictor import TTA_VIEWS, Predictor, predict, resolve_inputs

__all__ = ["TTA_VIEWS", "Predictor", "predict", "resolve_inputs"]

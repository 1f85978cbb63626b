"""Backbones for transfer learning: presets, weight sources and the preprocessing they expect.

>>> from dermlearn.models import create_backbone, PreprocessConfig, preprocess
>>> model = create_backbone("efficientnet_lite0", num_classes=0)   # bundled weights, offline
>>> cfg = PreprocessConfig.from_model(model)                        # store cfg.to_dict() with it
>>> features = model(preprocess(pil_images, cfg))                   # (N, 1280)
"""
from dermlearn.models.backbones import blocks, classifier, create_backbone, feature_dim
from dermlearn.models.bundled import bundled_weights_path, convert_lukemelas_efficientnet
from dermlearn.models.errors import ModelError, PreprocessConfigError, WeightsError
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform, preprocess
from dermlearn.models.presets import DEFAULT_BACKBONE, Preset, get_preset, list_presets
from dermlearn.models.state_dicts import LoadReport, load_into, load_state_dict_file
from dermlearn.models.weights import WeightSource, resolve_weights

__all__ = [
    "DEFAULT_BACKBONE",
    "LoadReport",
    "ModelError",
    "Preset",
    "PreprocessConfig",
    "PreprocessConfigError",
    "WeightSource",
    "WeightsError",
    "blocks",
    "bundled_weights_path",
    "classifier",
    "convert_lukemelas_efficientnet",
    "create_backbone",
    "eval_transform",
    "feature_dim",
    "get_preset",
    "list_presets",
    "load_into",
    "load_state_dict_file",
    "preprocess",
    "resolve_weights",
]

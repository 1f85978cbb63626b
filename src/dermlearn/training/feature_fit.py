"""Features mode in a run: the frozen backbone's features of every usable image (cached), then
one head per fold on them, placed on the backbone as a normal LesionClassifier.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dermlearn.models.backbones import create_backbone
from dermlearn.models.lesion_classifier import LesionClassifier, head_config
from dermlearn.models.preprocessing import PreprocessConfig
from dermlearn.models.views import first_views
from dermlearn.training.fit import model_config, preprocess_config
from dermlearn.training.runs import FoldData, RunSetup

__all__ = ["fit_fold_features", "run_features"]


def run_features(setup: RunSetup, progress: bool
                 ) -> tuple[np.ndarray, torch.nn.Module, PreprocessConfig]:
    """(features (N, D) float32 of the manifest's images, zeros for the test part; the frozen
    backbone; its preprocessing), read from the feature cache where it holds them."""
    from dermlearn.training.features import FeatureCache, extract_features

    plan, recipe = setup.plan, setup.plan.recipe
    backbone = create_backbone(recipe.backbone, weights=recipe.weights, num_classes=0)
    cfg = preprocess_config(backbone, recipe)
    cache = FeatureCache(Path(plan.feature_cache)) if plan.feature_cache \
        else FeatureCache.default()
    usable = setup.usable
    features = extract_features(setup.manifest.subset(usable), backbone, cfg, cache=cache,
                                batch_size=recipe.batch_size, num_workers=recipe.num_workers,
                                views=first_views(recipe.tta), progress=progress)
    full = np.zeros((len(setup.manifest), features.shape[1]), dtype=np.float32)
    full[usable] = features
    return full, backbone, cfg


def fit_fold_features(setup: RunSetup, fold: FoldData, features: np.ndarray,
                      backbone: torch.nn.Module, cfg: PreprocessConfig
                      ) -> tuple[LesionClassifier, dict, np.ndarray]:
    """A head on the fold's training features; returns (model, config, validation
    probabilities (N, C))."""
    from dermlearn.training.features import fit_logreg_head, fit_mlp_head, head_to_classifier

    recipe, classes = setup.plan.recipe, setup.classes
    x_train, y_train = features[fold.train_rows], setup.targets[fold.train_rows]
    weight = "balanced" if recipe.class_weights else None
    fit_head = fit_mlp_head if recipe.head == "mlp" else fit_logreg_head
    head = fit_head(x_train, y_train, len(classes), class_weight=weight, seed=recipe.seed)
    with torch.inference_mode():
        logits = head(torch.from_numpy(features[fold.val_rows]).float())
        probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    model = head_to_classifier(backbone, head, len(classes))
    config = model_config(recipe, setup.manifest, fold, classes, cfg, backbone, None)
    config["head"] = head_config(head)
    return model.eval(), config, probs

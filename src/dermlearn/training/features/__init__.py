"""Feature-extraction training (``dermlearn train --mode features``): frozen backbone, cached features.

The backbone runs once over the dataset; its pooled penultimate features are cached on disk
(:class:`FeatureCache`) and a small head -- multinomial logistic regression or an MLP -- is
trained on them. k-fold cross-validation then costs k head fits, not k extractions
(:func:`cross_validate_features`). The trained head is placed on the backbone as a normal
:class:`~dermlearn.models.lesion_classifier.LesionClassifier` (:func:`head_to_classifier`), so
prediction, serving and ONNX export need nothing special.

>>> backbone = create_backbone("efficientnet_lite0", weights="bundled", num_classes=0)
>>> cfg = PreprocessConfig.from_model(backbone)
>>> X = extract_features(manifest, backbone, cfg, cache=FeatureCache("~/.cache/dermlearn/features"))
>>> oof, heads = cross_validate_features(X, y, folds, num_classes=3)        # no re-extraction
>>> model = head_to_classifier(backbone, fit_logreg_head(X, y, 3), 3)      # model(images) == logits

The package: :mod:`.cache` (the on-disk cache), :mod:`.extraction` (frozen-backbone features
through the one scoring loop), :mod:`.heads` (heads on features, k-fold CV).
"""
from dermlearn.training.features.cache import (
    CACHE_ENV,
    CACHE_FORMAT,
    FeatureCache,
    default_cache_dir,
    feature_extractor,
    image_key,
    state_digest,
)
from dermlearn.training.features.errors import FeatureCacheError, FeaturesError
from dermlearn.training.features.extraction import BackboneRunner, extract_features
from dermlearn.training.features.heads import (
    ABSENT_CLASS_BIAS,
    build_head,
    cross_validate_features,
    fit_logreg,
    fit_logreg_head,
    fit_mlp_head,
    head_config,
    head_to_classifier,
    logreg_to_linear,
    predict_proba,
)

__all__ = ["ABSENT_CLASS_BIAS", "BackboneRunner", "CACHE_ENV", "CACHE_FORMAT", "FeatureCache",
           "FeatureCacheError", "FeaturesError", "build_head", "cross_validate_features",
           "default_cache_dir", "extract_features", "feature_extractor", "fit_logreg",
           "fit_logreg_head", "fit_mlp_head", "head_config", "head_to_classifier", "image_key",
           "logreg_to_linear", "predict_proba", "state_digest"]

"""Out-of-distribution screen: is this photo like the images the model was trained on?

Method: multi-layer Mahalanobis distance (Lee et al. 2018, "A simple unified framework for
detecting out-of-distribution samples and adversarial attacks"). For each of a few layers of
the first ensemble member -- the pooled penultimate features and the middle stages of the
backbone, each summarised by the spatial mean and standard deviation of every channel -- the
in-distribution images are modelled by class-conditional Gaussians with one shared covariance,
and a photo's layer score is its Mahalanobis distance to the nearest class mean,

    d_l(x) = min_k sqrt((f_l(x) - mu_lk)^T  Sigma_l^-1  (f_l(x) - mu_lk)).

``Sigma_l`` is the within-class covariance shrunk by Ledoit-Wolf (invertible even with fewer
images than dimensions); classes with fewer than ``min_class_size`` images share one pooled
mean, and without labels there is a single mean. Each layer's score is divided by the median of
its held-out in-distribution scores and the image's score is the largest of these ratios: the
penultimate layer catches photos of other things (a cat, a person, a landscape), the middle
stages catch images whose texture statistics are wrong (noise, a flat or blank frame, a
screenshot), which can sit close to the lesion images in the penultimate space alone.

The flag threshold is the ``percentile`` (default 95) of *held-out* in-distribution scores:
the images are split into ``folds`` (grouped by lesion when ``groups`` is given), each part is
scored by statistics fitted on the others, and the threshold (and the per-layer medians) are
read off those cross-fitted scores; the saved statistics are then fitted on all images. So about
``100 - percentile`` percent of genuine training-like photos are flagged by design.

Saved beside the model as ``ood.safetensors`` (per layer: means, precision matrix) and
``ood.json`` (layers, threshold, percentile, score quantiles, the model version it belongs to).

>>> detector = fit_ood(predictor, train_paths, labels=train_labels, groups=lesion_ids)
>>> detector.save("runs/ham/model")
>>> load_ood("runs/ham/model").assess(features)      # [{"flag": False, "score": ..., ...}]
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dermlearn.errors import DermlearnError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from dermlearn.inference.predictor import Predictor

__all__ = ["OOD_JSON", "OOD_WEIGHTS", "LayerStats", "OODDetector", "feature_layers",
           "OODUnavailable", "fit_ood", "fit_ood_features", "image_features", "load_ood",
           "ood_features", "read_ood", "unavailable"]

log = logging.getLogger(__name__)

OOD_WEIGHTS = "ood.safetensors"
OOD_JSON = "ood.json"
METHOD = "multi-layer mahalanobis"
POOLED = "__pooled__"
PENULTIMATE = "penultimate"


def unavailable(reason: str) -> dict[str, Any]:
    """The ``ood`` field of a prediction when no detector is loaded."""
    return {"available": False, "flag": None, "reason": reason}


# -- features ------------------------------------------------------------------------------
def feature_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The middle backbone stages whose channel statistics join the penultimate features:
    stages 30%-70% of the way through :func:`~dermlearn.models.backbones.blocks` (EfficientNet:
    ``blocks.2``-``blocks.4``; ResNet: ``layer2``, ``layer3``); [] when the stages are not
    modules of the network itself (e.g. VGG's slices), leaving the penultimate layer alone."""
    from dermlearn.models.backbones import blocks

    names = {id(m): n for n, m in backbone.named_modules() if n}
    stages = [(names[id(m)], m) for m in blocks(backbone) if id(m) in names]
    n = len(stages)
    if n < 3:
        return []
    return stages[int(round(0.3 * n)):int(round(0.7 * n))]


def ood_features(member: nn.Module, images: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, int]]]:
    """One pass of ``member.features``: (penultimate (N, D), OOD vector (N, D'), layout).

    The OOD vector is the penultimate features followed by the spatial mean and standard
    deviation of each channel of every :func:`feature_layers` stage; ``layout`` names each
    part and its width. Safe under concurrent forwards of the same module from other threads
    (only this thread's activations are captured); traceable for ONNX export.
    """
    import torch

    owner = threading.get_ident()
    captured: list[tuple[str, torch.Tensor]] = []

    def hook(name):
        def capture(module, inputs, output):
            if threading.get_ident() == owner and isinstance(output, torch.Tensor) \
                    and output.dim() == 4:
                captured.append((name, torch.cat([output.mean(dim=(2, 3)),
                                                  output.std(dim=(2, 3), correction=0)], dim=1)))
        return capture

    handles = [module.register_forward_hook(hook(name))
               for name, module in feature_layers(member.backbone)]
    try:
        penultimate = member.features(images)
    finally:
        for handle in handles:
            handle.remove()
    parts = [(PENULTIMATE, penultimate.flatten(1))] + captured
    layout = [(name, int(t.shape[1])) for name, t in parts]
    return penultimate, torch.cat([t.float() for _, t in parts], dim=1), layout


# -- statistics ---------------------------------------------------------------------------
@dataclass
class LayerStats:
    """Class means and shared precision of one layer, and its held-out median score."""

    name: str
    means: np.ndarray       # (K, D)
    precision: np.ndarray   # (D, D)
    scale: float            # median held-out in-distribution distance

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def distance(self, x: np.ndarray) -> np.ndarray:
        return _min_distance(x, self.means, self.precision)


@dataclass
class OODDetector:
    """Multi-layer Mahalanobis screen in the model's feature space (see the module docstring)."""

    layers: list[LayerStats]
    threshold: float                  # combined scores above it are flagged
    percentile: float                 # of held-out in-distribution scores giving ``threshold``
    groups: list[str]                 # name of each mean (class ids, or "__pooled__")
    n_images: int
    score_quantiles: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None
    feature_digest: str | None = None   # model_card.feature_digest of the model it fits
    feature_source: str = ("first ensemble member: pooled penultimate features + channel "
                           "mean/std of middle backbone stages")

    @property
    def dim(self) -> int:
        return sum(layer.dim for layer in self.layers)

    @property
    def layout(self) -> list[tuple[str, int]]:
        return [(layer.name, layer.dim) for layer in self.layers]

    def layer_scores(self, features: np.ndarray) -> np.ndarray:
        """Per-layer distances divided by their in-distribution medians, (N, L)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DermlearnError(f"OOD features must have shape (N, {self.dim}), got {x.shape}; "
                                 "were the statistics fitted with another model?")
        out, start = [], 0
        for layer in self.layers:
            out.append(layer.distance(x[:, start:start + layer.dim]) / layer.scale)
            start += layer.dim
        return np.stack(out, axis=1)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Combined OOD score (N,): the largest normalised layer distance."""
        return self.layer_scores(features).max(axis=1)

    def assess(self, features: np.ndarray) -> list[dict[str, Any]]:
        """The ``ood`` field of each prediction: flag, score, threshold and the layer that
        decided."""
        scores = self.layer_scores(features)
        return [{"available": True, "flag": bool(row.max() > self.threshold),
                 "score": float(row.max()), "threshold": float(self.threshold),
                 "method": METHOD, "percentile": self.percentile,
                 "layer": self.layers[int(row.argmax())].name}
                for row in scores]

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (for ``ood.json`` and the model card)."""
        return {"available": True, "method": METHOD, "threshold": float(self.threshold),
                "percentile": self.percentile, "n_images": self.n_images, "dim": self.dim,
                "layers": [{"name": ly.name, "dim": ly.dim, "scale": ly.scale} for ly in self.layers],
                "groups": list(self.groups), "score_quantiles": self.score_quantiles,
                "model_version": self.model_version, "feature_digest": self.feature_digest,
                "feature_source": self.feature_source}

    def save(self, model_dir: str | Path) -> Path:
        """Write ``ood.safetensors`` and ``ood.json`` into the model directory."""
        from safetensors.numpy import save_file

        from dermlearn.atomic import atomic_write

        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, layer in enumerate(self.layers):
            tensors[f"{i}.means"] = np.ascontiguousarray(layer.means, np.float64)
            tensors[f"{i}.precision"] = np.ascontiguousarray(layer.precision, np.float64)
        atomic_write(model_dir / OOD_WEIGHTS, lambda p: save_file(tensors, str(p)))
        info = {**self.summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(model_dir / OOD_JSON,
                      lambda p: Path(p).write_text(json.dumps(info, indent=2)))
        return model_dir / OOD_JSON


def _min_distance(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    best = np.full(len(x), np.inf)
    for mu in means:
        d = x - mu
        best = np.minimum(best, np.einsum("nd,de,ne->n", d, precision, d, optimize=True))
    return np.sqrt(np.maximum(best, 0.0))


def _fit_stats(x: np.ndarray, labels: np.ndarray | None, min_class_size: int
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(means, precision, group names) from one layer's features (N, D) and optional labels."""
    if labels is None:
        assign = np.zeros(len(x), dtype=np.int64)
        names = [POOLED]
    else:
        values, counts = np.unique(labels, return_counts=True)
        kept = [str(v) for v, c in zip(values, counts) if c >= min_class_size]
        names = kept + ([POOLED] if len(kept) < len(values) else [])
        index = {name: i for i, name in enumerate(names)}
        assign = np.array([index.get(str(v), index.get(POOLED, 0)) for v in labels])
    means = np.stack([x[assign == k].mean(axis=0) for k in range(len(names))])
    return means, _shrunk_precision(x - means[assign]), names


def _shrunk_precision(residuals: np.ndarray) -> np.ndarray:
    """Inverse of the Ledoit-Wolf shrunk covariance ``(1 - d) R^T R / n + d mu I`` of centred
    rows ``R`` (n, D); by the Woodbury identity in O(n^2 D) when n < D (sklearn's estimator
    inverts the D x D matrix by eigendecomposition, ~20x slower at D = 1280)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    r = np.asarray(residuals, dtype=np.float64)
    n, dim = r.shape
    shrinkage = float(ledoit_wolf_shrinkage(r, assume_centered=True))
    mu = float(np.einsum("nd,nd->", r, r)) / (n * dim)
    if mu <= 0:  # all rows identical: an isotropic unit metric
        return np.eye(dim)
    a, b = shrinkage * mu, (1.0 - shrinkage) / n
    if n < dim and a > 1e-12 * mu:
        gram = (a / b) * np.eye(n) + r @ r.T
        return (np.eye(dim) - r.T @ np.linalg.solve(gram, r)) / a
    covariance = b * (r.T @ r) + a * np.eye(dim)
    covariance.flat[::dim + 1] += 1e-9 * mu  # guards a rank-deficient, unshrunk estimate
    return np.linalg.inv(covariance)


def fit_ood_features(features: np.ndarray, layout: Sequence[tuple[str, int]] | None = None,
                     labels: Sequence[Any] | None = None, *, groups: Sequence[Any] | None = None,
                     percentile: float = 95.0, folds: int = 5, min_class_size: int = 10,
                     seed: int = 0, model_version: str | None = None,
                     feature_digest: str | None = None) -> OODDetector:
    """Fit the detector on in-distribution OOD vectors (N, D) split by ``layout`` ([(name,
    width)], default one layer) -- see the module docstring."""
    from sklearn.model_selection import GroupKFold, KFold

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 4:
        raise DermlearnError(f"fit_ood needs at least 4 images' features (N, D), got {x.shape}")
    layout = list(layout or [(PENULTIMATE, x.shape[1])])
    if sum(w for _, w in layout) != x.shape[1]:
        raise DermlearnError(f"feature layout {layout} does not add up to {x.shape[1]} columns")
    if not 50.0 <= percentile < 100.0:
        raise DermlearnError(f"percentile must be in [50, 100), got {percentile}")
    y = None if labels is None else np.asarray([str(v) for v in labels])
    if y is not None and len(y) != len(x):
        raise DermlearnError(f"{len(y)} labels for {len(x)} images")
    if not np.isfinite(x).all():
        raise DermlearnError("OOD features contain NaN or infinity")
    bounds = np.cumsum([0] + [w for _, w in layout])
    cols = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    k = max(2, min(folds, len(x) // 2))
    if groups is not None and len(set(groups)) >= k:
        splits = list(GroupKFold(n_splits=k).split(x, groups=np.asarray(groups)))
    else:
        splits = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(x))
    held_out = np.empty((len(x), len(layout)))
    for train, test in splits:
        for j, col in enumerate(cols):
            means, precision, _ = _fit_stats(x[train, col], None if y is None else y[train],
                                             min_class_size)
            held_out[test, j] = _min_distance(x[test, col], means, precision)
    scales = np.maximum(np.median(held_out, axis=0), 1e-12)
    combined = (held_out / scales).max(axis=1)
    layers, names = [], [POOLED]
    for (name, _), col, scale in zip(layout, cols, scales):
        means, precision, names = _fit_stats(x[:, col], y, min_class_size)
        layers.append(LayerStats(name, means, precision, float(scale)))
    quantiles = {f"p{q:g}": float(np.percentile(combined, q)) for q in (5, 25, 50, 75, 95, 99)}
    return OODDetector(layers=layers, threshold=float(np.percentile(combined, percentile)),
                       percentile=float(percentile), groups=names, n_images=len(x),
                       score_quantiles=quantiles, model_version=model_version,
                       feature_digest=feature_digest)


def image_features(predictor: Predictor, paths: Sequence[str | Path], *, batch_size: int = 32,
                   num_workers: int = 0, progress: bool = False) -> np.ndarray:
    """The OOD feature vectors (N, D) of image files, decoded and preprocessed as the service
    does (see :func:`ood_features`). An unreadable file is an ImageDecodeError naming it."""
    from dermlearn.inference.scoring import score_images

    return score_images(predictor, [str(p) for p in paths], outputs=("ood",),
                        batch_size=batch_size, num_workers=num_workers, skip_unreadable=False,
                        progress=progress, desc="OOD features").outputs["ood"]


def fit_ood(predictor: Predictor, paths: Sequence[str | Path], labels: Sequence[Any] | None
            = None, *, groups: Sequence[Any] | None = None, percentile: float = 95.0,
            folds: int = 5, min_class_size: int = 10, batch_size: int = 32,
            num_workers: int = 0, progress: bool = False, seed: int = 0) -> OODDetector:
    """Fit the OOD detector on the features of training images ``paths`` (the same images the
    model was trained on, or a representative part of them).

    ``labels`` (class ids, optional) make the Gaussians class-conditional; ``groups`` (lesion
    ids, optional) keep a lesion's images on one side of the cross-fitting that sets the
    threshold. Images are decoded and preprocessed exactly as the service does.
    """
    from dermlearn.inference.identity import feature_digest, model_identity

    features = image_features(predictor, paths, batch_size=batch_size, num_workers=num_workers,
                              progress=progress)
    version = digest = None
    if predictor.directory is not None:
        version = model_identity(predictor.directory, predictor.config)[1]
        digest = feature_digest(predictor.directory, predictor.config)
    return fit_ood_features(features, predictor.feature_layout, labels, groups=groups,
                            percentile=percentile, folds=folds, min_class_size=min_class_size,
                            seed=seed, model_version=version, feature_digest=digest)


class OODUnavailable(DermlearnError):
    """The saved OOD statistics cannot be used; ``reason`` says why, in words."""

    def __init__(self, model_dir: str | Path, reason: str):
        super().__init__(f"{model_dir}: {reason}")
        self.reason = reason


def read_ood(model_dir: str | Path, *, feature_digest: str | None = None) -> OODDetector:
    """The detector saved in ``model_dir``; :class:`OODUnavailable` when there is none, it is
    unreadable or not finite, or it was fitted for other weights (``feature_digest``, see
    :func:`~dermlearn.inference.identity.feature_digest`; a temperature fitted after the
    statistics keeps them valid). :func:`load_ood` is the lenient form."""
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    weights, info_path = model_dir / OOD_WEIGHTS, model_dir / OOD_JSON
    missing = [p.name for p in (weights, info_path) if not p.is_file()]
    if missing:
        raise OODUnavailable(model_dir, f"no OOD statistics ({' and '.join(missing)} missing; "
                                        "training writes them with fit_ood)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        tensors = load_file(str(weights))
        layers = [LayerStats(str(layer["name"]), tensors[f"{i}.means"].astype(np.float64),
                             tensors[f"{i}.precision"].astype(np.float64),
                             float(layer["scale"]))
                  for i, layer in enumerate(info["layers"])]
        detector = OODDetector(
            layers=layers, threshold=float(info["threshold"]),
            percentile=float(info["percentile"]), groups=list(info.get("groups") or []),
            n_images=int(info.get("n_images", 0)),
            score_quantiles=dict(info.get("score_quantiles") or {}),
            model_version=info.get("model_version"), feature_digest=info.get("feature_digest"))
    except Exception as exc:  # any corruption: one reason, never a traceback
        raise OODUnavailable(model_dir, f"unreadable OOD statistics ({type(exc).__name__}: "
                                        f"{str(exc)[:200]})") from None
    if not layers or not np.isfinite(detector.threshold) or not all(
            np.isfinite(ly.means).all() and np.isfinite(ly.precision).all() and ly.scale > 0
            and ly.precision.shape == (ly.dim, ly.dim) for ly in layers):
        raise OODUnavailable(model_dir, "unreadable OOD statistics (not finite or inconsistent)")
    if feature_digest and detector.feature_digest and detector.feature_digest != feature_digest:
        raise OODUnavailable(model_dir, f"OOD statistics were fitted for other weights "
                                        f"({detector.feature_digest}, not {feature_digest}); "
                                        f"refit them with fit_ood")
    return detector


def load_ood(model_dir: str | Path, *, feature_digest: str | None = None) -> OODDetector | None:
    """:func:`read_ood`, or None (with a warning unless there are no statistics)."""
    try:
        return read_ood(model_dir, feature_digest=feature_digest)
    except OODUnavailable as exc:
        if not exc.reason.startswith("no OOD statistics"):
            log.warning("%s; OOD screening disabled", exc)
        return None

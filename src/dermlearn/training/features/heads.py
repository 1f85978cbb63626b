"""Heads on cached features (features mode): multinomial logistic regression or a small MLP,
placed on the backbone as a normal LesionClassifier; cheap k-fold CV on features.
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from dermlearn.models.errors import ModelError
from dermlearn.models.lesion_classifier import _mlp, build_head, head_config  # noqa: F401
from dermlearn.splits import TEST
from dermlearn.training.features.cache import feature_extractor
from dermlearn.training.features.errors import FeaturesError

__all__ = ["ABSENT_CLASS_BIAS", "build_head", "cross_validate_features", "fit_logreg",
           "fit_logreg_head", "fit_mlp_head", "head_config", "head_to_classifier",
           "logreg_to_linear", "predict_proba", "torch_threads"]

log = logging.getLogger("dermlearn.training.features")

#: Logit bias given to classes absent from a head's training targets (probability ~ 0).
ABSENT_CLASS_BIAS = -1e4
#: Fold labels that take part in no cross-validation fold (the test part, missing values).
_EXCLUDED_FOLDS = frozenset({"test", str(TEST), "", "nan", "none"})


def _check_xy(features, targets, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(features)
    y = np.asarray(targets)
    if X.ndim != 2:
        raise FeaturesError(f"features must be (N, D), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise FeaturesError(f"targets must be (N,) = ({len(X)},), got shape {y.shape}")
    if len(X) == 0:
        raise FeaturesError("no training samples (features are empty)")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise FeaturesError(f"targets must be class indices (integers), got dtype {y.dtype}")
    if int(num_classes) < 1:
        raise FeaturesError(f"num_classes must be >= 1, not {num_classes}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise FeaturesError(f"{int(bad.sum())} target(s) outside 0..{num_classes - 1}, e.g. "
                            f"{y[bad][:5].tolist()}")
    if not np.isfinite(X).all():
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise FeaturesError(f"features of {len(rows)} sample(s) are not finite (rows "
                            f"{rows[:5].tolist()}): re-extract them")
    return X, y.astype(np.int64)


def _check_class_weight(class_weight):
    if class_weight is None or class_weight == "balanced" or isinstance(class_weight, Mapping):
        return class_weight
    raise FeaturesError(f"class_weight must be 'balanced', None or a {{class: weight}} dict, "
                        f"not {class_weight!r}")


def logreg_to_linear(scaler, clf, num_classes: int, *, dim: int | None = None) -> nn.Linear:
    """An ``nn.Linear`` that computes ``clf.decision_function(scaler.transform(x))`` on raw ``x``.

    ``scaler`` is a fitted ``StandardScaler`` (or None), ``clf`` a fitted ``LogisticRegression``
    whose ``classes_`` are class indices in ``0..num_classes-1``. Multiclass: output column
    ``c`` is the decision value of class ``c``. Binary (sklearn keeps one weight vector, ``z``):
    the two present classes get ``-z/2`` and ``+z/2``, so the logit difference is ``z`` and the
    softmax equals ``predict_proba``. Classes missing from ``classes_`` get weight 0 and bias
    :data:`ABSENT_CLASS_BIAS`.
    """
    classes = np.asarray(clf.classes_).astype(np.int64)
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    d = coef.shape[1] if dim is None else dim
    if scaler is not None:
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(d)
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(d)
        coef_raw = coef / scale
        intercept_raw = intercept - coef_raw @ mean
    else:
        coef_raw, intercept_raw = coef, intercept
    weight = np.zeros((num_classes, d), dtype=np.float64)
    bias = np.full(num_classes, ABSENT_CLASS_BIAS, dtype=np.float64)
    weight[classes] = coef_raw
    bias[classes] = intercept_raw
    linear = nn.Linear(d, num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    return linear


def fit_logreg(features, targets, *, class_weight="balanced", C: float = 1.0, seed: int = 0,
               max_iter: int = 5000, tol: float = 1e-4, num_threads: int | None = 1):
    """The sklearn (StandardScaler, LogisticRegression) pair :func:`fit_logreg_head` folds.

    Needs at least two classes present in ``targets``. ``num_threads`` limits the BLAS
    threads during the fit (1: fastest for these small problems, and ~20x faster than two
    spinning threads on a busy 2-core machine); None leaves them alone.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=C, class_weight=_check_class_weight(class_weight), solver="lbfgs",
                             max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(num_threads):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(scaler.transform(X), y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("logistic regression head did not converge in %d iterations (C=%g): "
                    "results may be slightly off; raise max_iter or lower C", max_iter, C)
    return scaler, clf


def fit_logreg_head(features, targets, num_classes: int, *, class_weight="balanced",
                    C: float = 1.0, seed: int = 0, max_iter: int = 5000,
                    tol: float = 1e-4, num_threads: int | None = 1) -> nn.Linear:
    """Multinomial logistic regression (lbfgs, L2 with inverse strength ``C``) on standardised
    features, folded into one ``nn.Linear(D, num_classes)`` that takes raw features.

    ``linear(x)`` equals sklearn's ``decision_function`` of the fitted StandardScaler +
    LogisticRegression (see :func:`logreg_to_linear` for the binary case). Classes absent
    from ``targets`` get bias :data:`ABSENT_CLASS_BIAS` so they are never predicted.
    ``class_weight``: ``"balanced"`` (inverse class frequency), None, or a dict.
    """
    X, y = _check_xy(features, targets, num_classes)
    _check_class_weight(class_weight)
    present = np.unique(y)
    if len(present) == 1:  # nothing to discriminate: always the one class seen
        linear = nn.Linear(X.shape[1], num_classes)
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.fill_(ABSENT_CLASS_BIAS)
            linear.bias[int(present[0])] = 0.0
        return linear
    scaler, clf = fit_logreg(X, y, class_weight=class_weight, C=C, seed=seed,
                             max_iter=max_iter, tol=tol, num_threads=num_threads)
    return logreg_to_linear(scaler, clf, num_classes)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Torch intra-op threads set to ``n`` (None: unchanged) inside the block."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _class_weights(y: np.ndarray, num_classes: int, class_weight) -> torch.Tensor | None:
    if class_weight is None:
        return None
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(num_classes, dtype=np.float64)
    if class_weight == "balanced":
        w[present] = len(y) / (present.sum() * counts[present])
    else:
        for c, value in class_weight.items():
            if not 0 <= int(c) < num_classes:
                raise FeaturesError(f"class_weight names class {c}, outside 0..{num_classes - 1}")
            w[int(c)] = float(value)
    return torch.tensor(w, dtype=torch.float32)


def fit_mlp_head(features, targets, num_classes: int, *, class_weight="balanced",
                 hidden: int = 256, dropout: float = 0.5, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-2, batch_size: int = 256, label_smoothing: float = 0.0,
                 seed: int = 0, num_threads: int | None = 1) -> nn.Sequential:
    """A one-hidden-layer MLP head on standardised features, trained with AdamW.

    Returns ``nn.Sequential(Linear(D, hidden), ReLU, Dropout(dropout), Linear(hidden, C))`` in
    eval mode, with the standardisation folded into the first Linear (it takes raw features).
    Mini-batches of ``batch_size`` (one full batch when N is smaller), cosine learning-rate
    decay over ``epochs``, class-weighted cross-entropy (``"balanced"``, None or a dict).
    Deterministic for a given ``seed`` (the global torch RNG is left untouched). Classes
    absent from ``targets`` get output bias :data:`ABSENT_CLASS_BIAS`. ``num_threads``: torch
    threads while training (1 by default: these matrices are small, and one thread is fastest
    and immune to a busy machine); None keeps the current setting.
    """
    X, y = _check_xy(features, targets, num_classes)
    _check_class_weight(class_weight)
    if hidden < 1 or epochs < 0 or batch_size < 1 or not 0 <= dropout < 1:
        raise FeaturesError(f"invalid MLP settings: hidden={hidden}, epochs={epochs}, "
                            f"batch_size={batch_size}, dropout={dropout}")
    x64 = X.astype(np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    std[std < 1e-12] = 1.0
    Z = torch.from_numpy(((x64 - mean) / std).astype(np.float32))
    T = torch.from_numpy(y)
    n, d = Z.shape
    weights = _class_weights(y, num_classes, class_weight)

    with torch.random.fork_rng(devices=[]), torch_threads(num_threads):
        torch.manual_seed(seed)
        net = _mlp(d, hidden, dropout, num_classes)
        first, last = net[0], net[3]
        gen = torch.Generator().manual_seed(seed)
        loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(n / batch_size)
        total = max(1, epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        net.train()
        with torch.enable_grad():
            for _ in range(epochs):
                order = torch.randperm(n, generator=gen)
                for s in range(steps_per_epoch):
                    idx = order[s * batch_size:(s + 1) * batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(net(Z[idx]), T[idx])
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
    net.eval()
    with torch.no_grad():  # fold (x - mean) / std into the first layer
        w = first.weight.double() / torch.from_numpy(std)
        b = first.bias.double() - w @ torch.from_numpy(mean)
        first.weight.copy_(w)
        first.bias.copy_(b)
        absent = torch.from_numpy(np.bincount(y, minlength=num_classes) == 0)
        last.weight[absent] = 0.0
        last.bias[absent] = ABSENT_CLASS_BIAS
    return net


def _head_shape(head: nn.Module) -> tuple[int, int]:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"head {type(head).__name__} has no nn.Linear layer")
    return linears[0].in_features, linears[-1].out_features


def head_to_classifier(backbone: nn.Module, head: nn.Module, num_classes: int):
    """A :class:`~dermlearn.models.lesion_classifier.LesionClassifier` = ``backbone`` + ``head``, in eval mode.

    An ``nn.Linear`` head is copied into ``LesionClassifier.head``; any other head (the MLP's
    ``nn.Sequential``) replaces it, so ``classifier(images) == head(backbone(images))``.
    ``backbone`` must give (N, D) features (``num_classes=0``); a LesionClassifier's backbone
    is used. The backbone is shared, not copied.
    """
    from dermlearn.models.backbones import feature_dim
    from dermlearn.models.lesion_classifier import LesionClassifier

    backbone = feature_extractor(backbone)
    dim = feature_dim(backbone)
    d_in, d_out = _head_shape(head)
    if d_in != dim or d_out != num_classes:
        raise ModelError(f"head maps {d_in} -> {d_out} but the backbone gives {dim} features "
                         f"and there are {num_classes} classes")
    model = LesionClassifier(backbone, num_classes)
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            model.head.weight.copy_(head.weight)
            model.head.bias.copy_(head.bias)
    else:
        model.head = head
    return model.eval()


def predict_proba(head: nn.Module, features) -> np.ndarray:
    """Softmax probabilities (N, C) float32 of ``head`` on features (N, D), in eval mode."""
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            logits = head(torch.as_tensor(np.asarray(features, dtype=np.float32)))
            return torch.softmax(logits.double(), dim=1).float().numpy()
    finally:
        head.train(was_training)


_HEADS: dict[str, Callable[..., nn.Module]] = {"logreg": fit_logreg_head, "mlp": fit_mlp_head}


def _fold_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def cross_validate_features(features, targets, folds, num_classes: int, head: str = "logreg",
                            **kw) -> tuple[np.ndarray, list[nn.Module]]:
    """k-fold CV of a head on cached features: (out-of-fold probabilities (N, C), heads per fold).

    ``folds`` (N,) holds each sample's fold label (e.g. the ``fold`` column of
    :func:`dermlearn.splits.make_splits`). For every fold label, in numeric/sorted order, a head
    (``"logreg"`` or ``"mlp"``, options ``kw``) is fit on the other folds and predicts that
    fold. Samples labelled ``test`` (or None/NaN) take part in no fold: they are never trained
    on and their out-of-fold row is NaN.
    """
    if head not in _HEADS:
        raise FeaturesError(f"head must be one of {', '.join(_HEADS)}, not {head!r}")
    X, y = _check_xy(features, targets, num_classes)
    folds = np.asarray(folds, dtype=object)
    if folds.shape != (len(X),):
        raise FeaturesError(f"folds must be (N,) = ({len(X)},), got shape {folds.shape}")
    labels = np.array(["" if f is None or (isinstance(f, float) and np.isnan(f)) else str(f)
                       for f in folds], dtype=object)
    included = np.array([lab.strip().lower() not in _EXCLUDED_FOLDS for lab in labels])
    names = sorted(set(labels[included]), key=_fold_sort_key)
    if len(names) < 2:
        raise FeaturesError(f"cross-validation needs at least 2 folds, found {names}")
    fit = _HEADS[head]
    oof = np.full((len(X), num_classes), np.nan, dtype=np.float32)
    heads: list[nn.Module] = []
    for name in names:
        held = labels == name
        train = included & ~held
        fitted = fit(X[train], y[train], num_classes, **kw)
        oof[held] = predict_proba(fitted, X[held])
        heads.append(fitted)
    return oof, heads


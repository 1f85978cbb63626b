"""Shared plumbing for gradient explanations: members, targets, eval mode, gradients on demand."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from dermlearn.errors import DermlearnError
from dermlearn.inference.predictor import ensemble_probabilities

Target = int | Sequence[int] | np.ndarray | torch.Tensor | None


def as_members(model: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    """A model or an ensemble's members, as a non-empty list."""
    members = [model] if isinstance(model, nn.Module) else list(model)
    if not members or not all(isinstance(m, nn.Module) for m in members):
        raise DermlearnError("explanations need a model or a non-empty list of models")
    return members


def device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def explaining(members: Sequence[nn.Module]) -> Iterator[None]:
    """Every module in eval mode and autograd on (even inside ``torch.inference_mode``);
    each module's own ``training`` flag is restored afterwards. Parameters are untouched:
    gradients are taken with respect to the input only."""
    modes = [(module, module.training) for m in members for module in m.modules()]
    try:
        for m in members:
            m.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def input_leaf(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float copy of ``batch`` (N, 3, H, W) on ``device`` that requires grad (memory format kept)."""
    if batch.ndim != 4:
        raise DermlearnError(f"expected an image batch (N, 3, H, W), got shape {tuple(batch.shape)}")
    return batch.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)


def member_logits(member: nn.Module, images: torch.Tensor,
                  metadata: torch.Tensor | None) -> torch.Tensor:
    """Logits (N, C) of one member; metadata (N, M) is passed only to members that fuse it."""
    if getattr(member, "metadata", None) is not None:
        if metadata is None:
            raise DermlearnError("this model fuses metadata (age, sex, site): pass metadata")
        return member(images, metadata.to(images.device))
    return member(images)


def mean_probs(logits: Sequence[torch.Tensor], temperature: float = 1.0,
               weights: Sequence[float] | None = None) -> torch.Tensor:
    """The ensemble's probabilities (N, C), float32 and differentiable: the (``weights``-
    weighted) mean of the members' softmax(logits / T)
    (:func:`~dermlearn.inference.predictor.ensemble_probabilities`)."""
    return ensemble_probabilities(logits, temperature, dtype=torch.float32, weights=weights)


def log_mean_probs(logits: Sequence[torch.Tensor], temperature: float = 1.0,
                   weights: Sequence[float] | None = None) -> torch.Tensor:
    """log of :func:`mean_probs`, computed stably (log-sum-exp over members)."""
    logp = torch.stack([torch.log_softmax(z.float() / temperature, dim=1) for z in logits])
    if weights is None:
        return torch.logsumexp(logp, dim=0) - float(np.log(len(logits)))
    log_w = torch.log(torch.as_tensor([float(w) for w in weights], dtype=logp.dtype,
                                      device=logp.device)).reshape(-1, 1, 1)
    return torch.logsumexp(logp + log_w, dim=0)


def resolve_targets(target: Target, probs: torch.Tensor) -> torch.Tensor:
    """Class index per image (N,) int64: ``None`` -> the predicted class (argmax of ``probs``),
    an int -> that class for every image, a sequence -> one class per image."""
    n, num_classes = probs.shape
    if target is None:
        return probs.detach().argmax(dim=1)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        out = torch.full((n,), int(target), dtype=torch.int64)
    else:
        out = torch.as_tensor(np.asarray(target), dtype=torch.int64).reshape(-1)
        if len(out) != n:
            raise DermlearnError(f"got {len(out)} targets for {n} images")
    bad = out[(out < 0) | (out >= num_classes)]
    if len(bad):
        raise DermlearnError(f"target class {int(bad[0])} is out of range: the model has "
                             f"{num_classes} classes (0..{num_classes - 1})")
    return out.to(probs.device)


def normalise_maps(maps: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Each map of (N, H, W) divided by its ``percentile``-th percentile and clipped to [0, 1].

    When that percentile is 0 (a map whose mass sits on under 1% of pixels) the map's maximum
    is used instead; an all-zero map stays 0. Returns float32.
    """
    maps = np.asarray(maps, dtype=np.float64)
    out = np.zeros(maps.shape, np.float32)
    for i, m in enumerate(maps):
        scale = float(np.percentile(m, percentile)) if m.size else 0.0
        if scale <= 0:
            scale = float(m.max(initial=0.0))
        if scale > 0:
            out[i] = np.clip(m / scale, 0.0, 1.0)
    return out

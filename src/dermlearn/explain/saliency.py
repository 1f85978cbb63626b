"""Gradient saliency (Esteva et al., Nature 2017, Fig. 4): which pixels the loss is most sensitive to.

For image ``x`` and class ``t`` the map is ``sum_c |d L / d x_c|``: the L1 norm across the RGB
channels of the gradient of the cross-entropy loss ``L = -log p_t(x)`` with respect to the input
pixels. For an ensemble ``p`` is the mean of the members' probabilities (as the predictor
averages them), so the map explains the ensemble's decision, not one member's.

>>> maps = saliency_map(model, batch)                 # (N, H, W) in [0, 1], predicted class
>>> maps = saliency_map(predictor.members, batch, target=2)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dermlearn.explain._common import (
    Target,
    as_members,
    device_of,
    explaining,
    input_leaf,
    log_mean_probs,
    member_logits,
    normalise_maps,
    resolve_targets,
)

__all__ = ["input_gradients", "saliency_map"]


def input_gradients(model: nn.Module | Sequence[nn.Module], batch: torch.Tensor,
                    target: Target = None, metadata: torch.Tensor | None = None, *,
                    temperature: float = 1.0, weights: Sequence[float] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(gradient (N, 3, H, W), probs (N, C), targets (N,))`` of ``L = -log p_target``.

    ``gradient`` is d L / d batch (per image: the batch loss is a sum of independent terms),
    ``probs`` the (ensemble-mean, temperature-scaled) probabilities of the same forward pass;
    ``weights``: each member's share of an ensemble's probabilities (None: equal).
    Every module runs in eval mode and is left in the mode it was in; parameters need not
    require grad and receive no ``.grad``.
    """
    members = as_members(model)
    with explaining(members):
        x = input_leaf(batch, device_of(members[0]))
        logits = [member_logits(m, x, metadata) for m in members]
        log_probs = log_mean_probs(logits, temperature, weights)
        targets = resolve_targets(target, log_probs.detach())
        loss = -log_probs.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad.detach(), log_probs.detach().exp(), targets.detach()


def saliency_map(model: nn.Module | Sequence[nn.Module], batch: torch.Tensor,
                 target: Target = None, metadata: torch.Tensor | None = None, *,
                 temperature: float = 1.0, pixel_std: Sequence[float] | None = None,
                 normalise: bool = True) -> np.ndarray:
    """Esteva et al.'s saliency: (N, H, W) float32, per image in [0, 1].

    ``model``: a LesionClassifier or a list of them (an ensemble: mean probabilities).
    ``batch``: preprocessed images (N, 3, H, W), any memory format. ``target``: class index,
    one per image, or None for each image's predicted class. ``metadata``: (N, M) for models
    that fuse age/sex/site. ``pixel_std``: the normalisation's per-channel std; given, the
    gradient is taken with respect to pixel intensities in [0, 1] (``dL/dx_norm / std``) rather
    than the normalised input. ``normalise``: divide each map by its 99th percentile and clip
    to [0, 1] (the top 1% of pixels saturate, so that one extreme pixel does not wash out the
    rest; see :func:`dermlearn.explain._common.normalise_maps`); False returns the raw L1 norms.
    """
    grad, _, _ = input_gradients(model, batch, target, metadata, temperature=temperature)
    if pixel_std is not None:
        std = torch.as_tensor(pixel_std, dtype=grad.dtype, device=grad.device).reshape(1, -1, 1, 1)
        grad = grad / std
    raw = grad.abs().sum(dim=1).float().cpu().numpy()
    return normalise_maps(raw) if normalise else raw.astype(np.float32)

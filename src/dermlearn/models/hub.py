"""timm's pretrained weights on the Hugging Face hub: offline mode, reachability, the local
cache, and the errors that say what to do when the weights cannot be had.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from dermlearn.models.errors import WeightsError

__all__ = [
    "find_cached_hub_weights",
    "hub_download_error",
    "hub_offline",
    "hub_offline_error",
    "hub_reachable",
    "hub_weights_exist",
]


_REMEDY = ("give --weights PATH (a .safetensors/.pth file), or run once online to fill the hub "
           "cache, or --weights none to train from scratch")


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

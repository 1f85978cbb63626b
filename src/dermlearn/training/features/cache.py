"""The on-disk feature cache of features mode, keyed by what the features depend on.

Cache layout (``root`` is the folder given to :class:`FeatureCache`)::

    root/<model_key>/meta.json          what the key stands for (architecture, weights, content
                                        hash, preprocessing, views, versions), for humans
    root/<model_key>/shards/<t>-<pid>-<rand>.npz
                                        append-only shards: ``keys`` (n,) image keys and
                                        ``features`` (n, D) float32 or float16

``model_key`` hashes the backbone architecture, a SHA-256 of its weights (the state dict
content, so a fine-tuned or replaced model never reuses stale features), the preprocessing
config, the test-time views and the timm version. An image key hashes the file's absolute
path, size and ``mtime_ns``, so a replaced or touched image is extracted again. Shards are
written to a temporary file and renamed into place (``os.replace``): a killed extraction keeps
every finished shard, and the next run extracts only what is missing. Randomly initialised
weights (``--weights none``) are never cached: :meth:`FeatureCache.model_key` raises
:class:`FeatureCacheError`, and :func:`extract_features` warns and extracts without the cache.
The default cache folder is ``$DERMLEARN_FEATURE_CACHE`` or ``~/.cache/dermlearn/features``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dermlearn.atomic import atomic_write
from dermlearn.cache_dirs import user_cache_dir
from dermlearn.data.sources import stat_image
from dermlearn.errors import DermlearnError, ImageDecodeError
from dermlearn.models.errors import ModelError
from dermlearn.models.preprocessing import PreprocessConfig
from dermlearn.models.views import check_views
from dermlearn.training.features.errors import FeatureCacheError, FeaturesError

__all__ = ["CACHE_ENV", "CACHE_FORMAT", "FeatureCache", "default_cache_dir", "feature_extractor",
           "image_key", "state_digest"]

log = logging.getLogger("dermlearn.training.features")

#: Version of the on-disk cache layout; part of every model key.
CACHE_FORMAT = 1
#: Environment variable naming the default feature cache folder.
CACHE_ENV = "DERMLEARN_FEATURE_CACHE"
_RANDOM_WEIGHTS = "random initialisation"  # str(WeightSource("none"))


def _check_views(views: Sequence[str] | str, cfg: PreprocessConfig) -> tuple[str, ...]:
    try:
        return check_views(views, cfg.image_size)
    except DermlearnError as exc:
        raise FeaturesError(str(exc)) from None


def _as_cfg(cfg: PreprocessConfig | Mapping[str, Any]) -> PreprocessConfig:
    if isinstance(cfg, PreprocessConfig):
        return cfg
    return PreprocessConfig.from_dict(cfg)


# --------------------------------------------------------------------------- model identity


def feature_extractor(model: nn.Module) -> nn.Module:
    """The module whose output is the (N, D) penultimate features of ``model``.

    A :class:`~dermlearn.models.lesion_classifier.LesionClassifier` gives its ``backbone``; a timm
    model must have been built with ``num_classes=0`` (its classifier is ``nn.Identity``).
    """
    from dermlearn.models.lesion_classifier import LesionClassifier

    if isinstance(model, LesionClassifier):
        return model.backbone
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch nn.Module backbone or LesionClassifier, "
                         f"got {type(model).__name__}")
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity) and any(
                True for _ in head.parameters()):
            raise ModelError(f"{_arch(model)} has a classifier ({head}): features need the pooled "
                             f"penultimate output: build it with create_backbone(..., "
                             f"num_classes=0) or pass a LesionClassifier")
    return model


def _find_attr(model: nn.Module, name: str) -> Any:
    for module in model.modules():
        value = getattr(module, name, None)
        if value is not None:
            return value
    return None


def _arch(model: nn.Module) -> str:
    cfg = _find_attr(model, "pretrained_cfg") or {}
    return str(cfg.get("architecture") or type(model).__name__) if isinstance(cfg, Mapping) \
        else type(model).__name__


def _weights_description(model: nn.Module) -> str:
    described = _find_attr(model, "dermlearn_weights")
    return str(described) if described is not None else "unknown (not built by create_backbone)"


def _refusal(extractor: nn.Module) -> str | None:
    """Why the features of ``extractor`` must not be cached, or None."""
    if _weights_description(extractor) == _RANDOM_WEIGHTS:
        return (f"not caching features of {_arch(extractor)} with randomly initialised weights "
                f"(--weights none): a new random initialisation gives different features on "
                f"every run, so such a cache entry would never be read again and would only "
                f"fill the disk; extract with cache=None, or use pretrained weights")
    return None


def state_digest(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``model.state_dict()`` (sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _json_hash(obj: Any, n: int = 20) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# --------------------------------------------------------------------------- image keys


def image_key(path: str | os.PathLike) -> str:
    """Cache key of an image file (or zip member): hash of its absolute path, size in bytes and
    ``mtime_ns``."""
    p = Path(path).expanduser()
    try:
        st = stat_image(p)
    except FileNotFoundError:
        raise ImageDecodeError(p, "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(p, f"cannot stat the file ({exc.strerror or exc})") from None
    text = f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()

# --------------------------------------------------------------------------- the cache


class FeatureCache:
    """On-disk cache of penultimate features, per (model, preprocessing, views) and image file.

    ``dtype`` is how new shards store features (``float32``, exact; or ``float16``, half the
    disk, ~1e-3 relative rounding). ``shard_size``: images per shard -- at most that many
    finished images are lost when the process is killed outright (an exception or Ctrl-C
    flushes everything finished).
    """

    def __init__(self, root: str | os.PathLike, *, dtype: str = "float32", shard_size: int = 1024):
        if dtype not in ("float32", "float16"):
            raise FeatureCacheError(f"feature cache dtype must be float32 or float16, not {dtype!r}")
        if int(shard_size) < 1:
            raise FeatureCacheError(f"feature cache shard_size must be >= 1, not {shard_size}")
        self.root = Path(root).expanduser()
        self.dtype = np.dtype(dtype)
        self.shard_size = int(shard_size)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, dtype={self.dtype.name!r})"

    @classmethod
    def default(cls, **kwargs) -> FeatureCache:
        """The cache in ``$DERMLEARN_FEATURE_CACHE``, else ``$XDG_CACHE_HOME/dermlearn/features``
        (``~/.cache/dermlearn/features``), read at call time."""
        return cls(default_cache_dir(), **kwargs)

    # -- keys ------------------------------------------------------------------------
    def describe(self, model: nn.Module, preprocess_cfg: PreprocessConfig,
                 views: Sequence[str] = ("identity",)) -> dict[str, Any]:
        """What the model key of ``model`` stands for (written to ``meta.json``).

        Raises :class:`FeatureCacheError` for randomly initialised weights.
        """
        import timm

        extractor = feature_extractor(model)
        weights = _weights_description(extractor)
        refusal = _refusal(extractor)
        if refusal:
            raise FeatureCacheError(refusal)
        cfg = _as_cfg(preprocess_cfg)
        return {
            "format": CACHE_FORMAT,
            "model": {
                "arch": _arch(extractor),
                "class": f"{type(extractor).__module__}.{type(extractor).__qualname__}",
                "weights": weights,
                "state_sha256": state_digest(extractor),
            },
            "preprocess": cfg.to_dict(),
            "views": list(_check_views(views, cfg)),
            "timm": timm.__version__,
        }

    def model_key(self, model: nn.Module, preprocess_cfg: PreprocessConfig,
                  views: Sequence[str] = ("identity",)) -> str:
        """Folder name for ``model`` + preprocessing + views (see the module docstring)."""
        return self._key_of(self.describe(model, preprocess_cfg, views))

    @staticmethod
    def _key_of(description: Mapping[str, Any]) -> str:
        # the weights are identified by their content hash; where they were read from (a
        # file path, the bundled package's location) is for humans and stays out of the key
        model = {k: v for k, v in description["model"].items() if k != "weights"}
        return _json_hash({**description, "model": model})

    def path(self, model_key: str) -> Path:
        return self.root / model_key

    def model_keys(self) -> list[str]:
        """Model keys present in the cache."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "meta.json").is_file())

    def meta(self, model_key: str) -> dict[str, Any]:
        path = self.path(model_key) / "meta.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeatureCacheError(f"{path}: no such feature cache entry") from None
        except (OSError, ValueError) as exc:
            raise FeatureCacheError(f"{path}: unreadable ({exc})") from None

    def prepare(self, model: nn.Module, preprocess_cfg: PreprocessConfig,
                views: Sequence[str] = ("identity",)) -> str:
        """Create ``root/<model_key>/meta.json`` if needed; return the model key."""
        description = self.describe(model, preprocess_cfg, views)
        key = self._key_of(description)
        folder = self.path(key)
        meta = folder / "meta.json"
        if not meta.is_file():
            try:
                (folder / "shards").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FeatureCacheError(f"cannot create feature cache folder {folder}: "
                                        f"{exc.strerror or exc}") from None
            human = {
                "what": "penultimate features cached by dermlearn.training.features",
                "model_key": key,
                **description,
                "image_key": "blake2b-128 of (absolute path, size in bytes, mtime_ns)",
                "torch": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _atomic_write_bytes(meta, json.dumps(human, indent=2).encode())
        return key

    # -- shards --------------------------------------------------------------------------
    def _shards(self, model_key: str) -> list[Path]:
        folder = self.path(model_key) / "shards"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))

    def load(self, model_key: str) -> dict[str, np.ndarray]:
        """Every cached feature vector of ``model_key``: image key -> (D,) float32 (later shards win)."""
        found: dict[str, np.ndarray] = {}
        dim = None
        for shard in self._shards(model_key):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    keys, feats = data["keys"], data["features"]
            except Exception as exc:  # damaged shard: recompute its images, never crash
                log.warning("feature cache: ignoring unreadable shard %s (%s)", shard, exc)
                continue
            if feats.ndim != 2 or len(keys) != len(feats) or (dim is not None and feats.shape[1] != dim):
                log.warning("feature cache: ignoring malformed shard %s (keys %s, features %s)",
                            shard, keys.shape, feats.shape)
                continue
            dim = feats.shape[1]
            feats = feats.astype(np.float32, copy=False)
            for k, row in zip(keys.tolist(), feats):
                found[k] = row
        return found

    def get(self, model_key: str, keys: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """(features (n, D) float32 with zeros where missing, or None if none cached; found (n,) bool)."""
        stored = self.load(model_key)
        found = np.array([k in stored for k in keys], dtype=bool)
        if not found.any():
            return None, found
        dim = len(next(iter(stored.values())))
        out = np.zeros((len(keys), dim), dtype=np.float32)
        for i, k in enumerate(keys):
            if found[i]:
                out[i] = stored[k]
        return out, found

    def put(self, model_key: str, keys: Sequence[str], features: np.ndarray) -> Path | None:
        """Append one shard (written atomically); returns its path (None when ``keys`` is empty)."""
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(keys):
            raise FeatureCacheError(f"put: {len(keys)} keys for features of shape {features.shape}")
        if not len(keys):
            return None
        folder = self.path(model_key) / "shards"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.npz"
        path = folder / name

        def write(fp):
            np.savez(fp, keys=np.asarray(list(keys), dtype=str),
                     features=features.astype(self.dtype, copy=False))

        _atomic_write(path, write)
        return path

    def entries(self, model_key: str) -> int:
        """Number of distinct image keys cached for ``model_key``."""
        return len(self.load(model_key))

    def compact(self, model_key: str, keep: Iterable[str] | None = None) -> int:
        """Merge the shards of ``model_key`` into one (only ``keep`` keys, if given); returns rows kept."""
        stored = self.load(model_key)
        if keep is not None:
            wanted = set(keep)
            stored = {k: v for k, v in stored.items() if k in wanted}
        old = self._shards(model_key)
        if stored:
            keys = list(stored)
            self.put(model_key, keys, np.stack([stored[k] for k in keys]))
        for shard in old:
            shard.unlink(missing_ok=True)
        return len(stored)

    def clear(self, model_key: str | None = None) -> None:
        """Delete the cached features of ``model_key`` (all model keys when None)."""
        import shutil

        for key in ([model_key] if model_key else self.model_keys()):
            shutil.rmtree(self.path(key), ignore_errors=True)


def default_cache_dir() -> Path:
    """Where :meth:`FeatureCache.default` keeps features (see there)."""
    return user_cache_dir("features", CACHE_ENV)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """:func:`~dermlearn.atomic.atomic_write` with ``write`` given an open binary file."""
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as fp:
            write(fp)

    try:
        atomic_write(path, to_file)
    except OSError as exc:
        raise FeatureCacheError(f"cannot write {path}: {exc.strerror or exc}") from None


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda fp: fp.write(data))



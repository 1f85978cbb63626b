"""Feature-extraction training (``dermlearn train --mode features``): frozen backbone, cached features.

The backbone runs once over the dataset; its pooled penultimate features are cached on disk
(:class:`FeatureCache`) and a small head -- multinomial logistic regression or an MLP -- is
trained on them. k-fold cross-validation then costs k head fits, not k extractions
(:func:`cross_validate_features`). The trained head is placed on the backbone as a normal
:class:`~dermlearn.models.lesion_classifier.LesionClassifier` (:func:`head_to_classifier`), so
prediction, serving and ONNX export need nothing special.

>>> backbone = create_backbone("efficientnet_lite0", weights="bundled", num_classes=0)
>>> cfg = PreprocessConfig.from_model(backbone)
>>> X = extract_features(manifest, backbone, cfg, cache=FeatureCache("~/.cache/dermlearn/features"))
>>> oof, heads = cross_validate_features(X, y, folds, num_classes=3)        # no re-extraction
>>> model = head_to_classifier(backbone, fit_logreg_head(X, y, 3), 3)      # model(images) == logits

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

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dermlearn.atomic import atomic_write
from dermlearn.cache_dirs import user_cache_dir
from dermlearn.data.images import read_image
from dermlearn.errors import DermlearnError, ImageDecodeError
from dermlearn.models.lesion_classifier import _mlp, build_head, head_config  # noqa: F401 (re-exported)
from dermlearn.models.errors import ModelError
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform
from dermlearn.models.views import apply_view, check_views

__all__ = [
    "ABSENT_CLASS_BIAS",
    "CACHE_ENV",
    "CACHE_FORMAT",
    "FeatureCache",
    "build_head",
    "head_config",
    "fit_logreg",
    "state_digest",
    "FeatureCacheError",
    "FeaturesError",
    "cross_validate_features",
    "default_cache_dir",
    "extract_features",
    "feature_extractor",
    "fit_logreg_head",
    "fit_mlp_head",
    "head_to_classifier",
    "image_key",
    "logreg_to_linear",
    "predict_proba",
]

log = logging.getLogger(__name__)

#: Version of the on-disk cache layout; part of every model key.
CACHE_FORMAT = 1
#: Environment variable naming the default feature cache folder.
CACHE_ENV = "DERMLEARN_FEATURE_CACHE"
#: Logit bias given to classes absent from a head's training targets (probability ~ 0).
ABSENT_CLASS_BIAS = -1e4
_RANDOM_WEIGHTS = "random initialisation"  # str(WeightSource("none"))
_EXCLUDED_FOLDS = frozenset({"test", "", "nan", "none"})


class FeaturesError(DermlearnError):
    """Features, targets or folds given to a head are malformed."""


class FeatureCacheError(FeaturesError):
    """The feature cache cannot be used for this model, or its files are unusable."""


# --------------------------------------------------------------------------- views (TTA)


def _check_views(views: Sequence[str] | str, cfg: PreprocessConfig) -> tuple[str, ...]:
    try:
        return check_views(views, cfg.image_size)
    except DermlearnError as exc:
        raise FeaturesError(str(exc)) from None


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
    """Cache key of an image file: hash of its absolute path, size in bytes and ``mtime_ns``."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
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
    def default(cls, **kwargs) -> "FeatureCache":
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


def _as_cfg(cfg: PreprocessConfig | Mapping[str, Any]) -> PreprocessConfig:
    if isinstance(cfg, PreprocessConfig):
        return cfg
    return PreprocessConfig.from_dict(cfg)


# --------------------------------------------------------------------------- extraction


class _Images(torch.utils.data.Dataset):
    """Decodes (with dermlearn's read_image) and transforms images; decode failures are returned."""

    def __init__(self, paths: Sequence[str], transform: Callable):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(read_image(self.paths[i])), None
        except ImageDecodeError as exc:  # re-raised in the main process with its real type
            return i, None, exc.reason


def _collate(items):
    index = [i for i, _, _ in items]
    errors = [(i, reason) for i, _, reason in items if reason is not None]
    if errors:
        return index, None, errors
    return index, torch.stack([x for _, x, _ in items]), []


def _paths_of(manifest) -> list[str]:
    table = getattr(manifest, "table", None)
    if table is not None:
        return [str(p) for p in table["path"]]
    return [os.fspath(p) for p in manifest]


def _forward(extractor: nn.Module, x: torch.Tensor, views: tuple[str, ...]) -> torch.Tensor:
    total = None
    for view in views:
        out = extractor(apply_view(x, view))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"{_arch(extractor)} returned {shape} for a batch of {x.shape[0]}: "
                             f"expected (N, D) pooled features (build it with num_classes=0)")
        out = out.float()
        total = out if total is None else total + out
    return total / len(views)


def _is_channels_last(model: nn.Module) -> bool:
    return any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last)
               and not p.is_contiguous() for p in model.parameters())


def extract_features(manifest, model: nn.Module, preprocess_cfg: PreprocessConfig, *,
                     cache: FeatureCache | None = None, batch_size: int = 32,
                     num_workers: int = 2, progress: bool = True, channels_last: bool = True,
                     views: Sequence[str] = ("identity",), num_threads: int | None = None,
                     stats: dict | None = None) -> np.ndarray:
    """Penultimate features (N, D) float32 of every image of ``manifest``, in manifest order.

    ``model`` is a backbone built with ``num_classes=0`` or a LesionClassifier (its backbone is
    used). Images are decoded with :func:`~dermlearn.data.images.read_image` in a streaming
    DataLoader (``num_workers`` processes), prepared with ``eval_transform(preprocess_cfg)``
    and run in eval mode under ``torch.inference_mode`` (channels-last memory when asked; the
    model's mode and memory format are restored afterwards). With ``cache``, images already
    cached for this model/preprocessing/views are read back and only the rest are computed;
    finished batches are written even when extraction fails half way. Features of randomly
    initialised weights are never cached: the cache is skipped with a warning saying why.
    ``views``: test-time
    views averaged per image (see :data:`dermlearn.models.views.VIEWS`). ``num_threads``: torch threads for the forward
    passes (None: leave torch's setting; 1 is much faster on a machine whose cores are busy
    with other work, where spinning OpenMP threads wait on each other). ``manifest`` may also
    be a list of paths.
    If ``stats`` is a dict it receives ``cached``, ``extracted``, ``seconds`` and ``model_key``.
    An unreadable image raises :class:`~dermlearn.errors.ImageDecodeError` naming it.
    """
    started = time.perf_counter()
    cfg = _as_cfg(preprocess_cfg)
    views = _check_views(views, cfg)
    extractor = feature_extractor(model)
    if batch_size < 1:
        raise FeaturesError(f"batch_size must be >= 1, not {batch_size}")
    paths = _paths_of(manifest)
    n = len(paths)

    key = None
    out: np.ndarray | None = None
    if cache is not None and (refusal := _refusal(extractor)):
        log.warning("%s; extracting without the cache", refusal)
        cache = None
    if cache is not None:
        key = cache.prepare(extractor, cfg, views)
        keys = [image_key(p) for p in paths]
        out, found = cache.get(key, keys)
        # one computation per distinct image file, even if the manifest lists it twice
        first: dict[str, int] = {}
        for i in np.flatnonzero(~found):
            first.setdefault(keys[i], int(i))
        todo = list(first.values())
    else:
        keys = None
        found = np.zeros(n, dtype=bool)
        todo = list(range(n))

    if out is None and not todo:  # empty manifest
        from dermlearn.models.backbones import feature_dim

        try:
            dim = feature_dim(extractor)
        except Exception:
            dim = 0
        out = np.zeros((0, dim), dtype=np.float32)

    if todo:
        with _torch_threads(num_threads):
            out = _compute(paths, todo, keys, out, n, extractor, cfg, views, cache, key,
                           batch_size=batch_size, num_workers=num_workers, progress=progress,
                           channels_last=channels_last)
        if keys is not None:  # fill duplicates of the files just computed
            row_of = {keys[i]: i for i in todo}
            for i in np.flatnonzero(~found):
                src = row_of[keys[i]]
                if src != i:
                    out[i] = out[src]

    seconds = time.perf_counter() - started
    if stats is not None:
        stats.update(cached=int(found.sum()), extracted=len(todo), seconds=seconds, model_key=key)
    log.info("features: %d images, %d from cache, %d extracted in %.1f s", n, int(found.sum()),
             len(todo), seconds)
    return out


def _compute(paths, todo, keys, out, n, extractor, cfg, views, cache, key, *, batch_size,
             num_workers, progress, channels_last) -> np.ndarray:
    from tqdm.auto import tqdm

    dataset = _Images([paths[i] for i in todo], eval_transform(cfg))
    workers = max(0, min(int(num_workers), math.ceil(len(todo) / batch_size)))
    try:
        device = next(extractor.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate, pin_memory=device.type == "cuda")

    modes = [(m, m.training) for m in extractor.modules()]  # restored module by module
    was_channels_last = _is_channels_last(extractor)
    extractor.eval()
    if channels_last and not was_channels_last:
        extractor.to(memory_format=torch.channels_last)
    pending_keys: list[str] = []
    pending_rows: list[np.ndarray] = []

    def flush() -> None:
        if cache is not None and pending_keys:
            cache.put(key, pending_keys, np.concatenate(pending_rows))
            pending_keys.clear()
            pending_rows.clear()

    bar = tqdm(total=len(todo), desc="extracting features", unit="img", disable=not progress,
               dynamic_ncols=True)
    failed = True
    try:
        with torch.inference_mode():
            for index, x, errors in loader:
                if errors:
                    pos, reason = errors[0]
                    more = f" (and {len(errors) - 1} more in this batch)" if len(errors) > 1 else ""
                    raise ImageDecodeError(paths[todo[pos]], reason + more)
                x = x.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                feats = _forward(extractor, x, views).cpu().numpy()
                if cache is not None and cache.dtype != np.float32:
                    feats = feats.astype(cache.dtype).astype(np.float32)  # what a re-read gives
                if out is None:
                    out = np.zeros((n, feats.shape[1]), dtype=np.float32)
                elif feats.shape[1] != out.shape[1]:
                    raise FeatureCacheError(
                        f"{_arch(extractor)} gives {feats.shape[1]} features but the cache "
                        f"{cache.path(key) if cache else ''} holds {out.shape[1]}: clear it")
                rows = [todo[i] for i in index]
                out[rows] = feats
                if cache is not None:
                    pending_keys.extend(keys[r] for r in rows)
                    pending_rows.append(feats)
                    if len(pending_keys) >= cache.shard_size:
                        flush()
                bar.update(len(rows))
        failed = False
    finally:
        bar.close()
        try:
            flush()  # keep every finished batch, also when extraction stops half way
        except Exception:
            if not failed:
                raise
            log.exception("feature cache: could not save the finished batches")
        for module, training in modes:
            module.training = training
        if channels_last and not was_channels_last:
            extractor.to(memory_format=torch.contiguous_format)
    return out


# --------------------------------------------------------------------------- heads


def _check_xy(features, targets, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(features)
    y = np.asarray(targets)
    if X.ndim != 2:
        raise FeaturesError(f"features must be (N, D), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise FeaturesError(f"targets must be (N,) = ({len(X)},), got shape {y.shape}")
    if len(X) == 0:
        raise FeaturesError("no training samples (features are empty)")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise FeaturesError(f"targets must be class indices (integers), got dtype {y.dtype}")
    if int(num_classes) < 1:
        raise FeaturesError(f"num_classes must be >= 1, not {num_classes}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise FeaturesError(f"{int(bad.sum())} target(s) outside 0..{num_classes - 1}, e.g. "
                            f"{y[bad][:5].tolist()}")
    if not np.isfinite(X).all():
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise FeaturesError(f"features of {len(rows)} sample(s) are not finite (rows "
                            f"{rows[:5].tolist()}): re-extract them")
    return X, y.astype(np.int64)


def _check_class_weight(class_weight):
    if class_weight is None or class_weight == "balanced" or isinstance(class_weight, Mapping):
        return class_weight
    raise FeaturesError(f"class_weight must be 'balanced', None or a {{class: weight}} dict, "
                        f"not {class_weight!r}")


def logreg_to_linear(scaler, clf, num_classes: int, *, dim: int | None = None) -> nn.Linear:
    """An ``nn.Linear`` that computes ``clf.decision_function(scaler.transform(x))`` on raw ``x``.

    ``scaler`` is a fitted ``StandardScaler`` (or None), ``clf`` a fitted ``LogisticRegression``
    whose ``classes_`` are class indices in ``0..num_classes-1``. Multiclass: output column
    ``c`` is the decision value of class ``c``. Binary (sklearn keeps one weight vector, ``z``):
    the two present classes get ``-z/2`` and ``+z/2``, so the logit difference is ``z`` and the
    softmax equals ``predict_proba``. Classes missing from ``classes_`` get weight 0 and bias
    :data:`ABSENT_CLASS_BIAS`.
    """
    classes = np.asarray(clf.classes_).astype(np.int64)
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    d = coef.shape[1] if dim is None else dim
    if scaler is not None:
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(d)
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(d)
        coef_raw = coef / scale
        intercept_raw = intercept - coef_raw @ mean
    else:
        coef_raw, intercept_raw = coef, intercept
    weight = np.zeros((num_classes, d), dtype=np.float64)
    bias = np.full(num_classes, ABSENT_CLASS_BIAS, dtype=np.float64)
    weight[classes] = coef_raw
    bias[classes] = intercept_raw
    linear = nn.Linear(d, num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    return linear


def fit_logreg(features, targets, *, class_weight="balanced", C: float = 1.0, seed: int = 0,
               max_iter: int = 5000, tol: float = 1e-4, num_threads: int | None = 1):
    """The sklearn (StandardScaler, LogisticRegression) pair :func:`fit_logreg_head` folds.

    Needs at least two classes present in ``targets``. ``num_threads`` limits the BLAS
    threads during the fit (1: fastest for these small problems, and ~20x faster than two
    spinning threads on a busy 2-core machine); None leaves them alone.
    """
    from threadpoolctl import threadpool_limits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=C, class_weight=_check_class_weight(class_weight), solver="lbfgs",
                             max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(num_threads):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(scaler.transform(X), y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("logistic regression head did not converge in %d iterations (C=%g): "
                    "results may be slightly off; raise max_iter or lower C", max_iter, C)
    return scaler, clf


def fit_logreg_head(features, targets, num_classes: int, *, class_weight="balanced",
                    C: float = 1.0, seed: int = 0, max_iter: int = 5000,
                    tol: float = 1e-4, num_threads: int | None = 1) -> nn.Linear:
    """Multinomial logistic regression (lbfgs, L2 with inverse strength ``C``) on standardised
    features, folded into one ``nn.Linear(D, num_classes)`` that takes raw features.

    ``linear(x)`` equals sklearn's ``decision_function`` of the fitted StandardScaler +
    LogisticRegression (see :func:`logreg_to_linear` for the binary case). Classes absent
    from ``targets`` get bias :data:`ABSENT_CLASS_BIAS` so they are never predicted.
    ``class_weight``: ``"balanced"`` (inverse class frequency), None, or a dict.
    """
    X, y = _check_xy(features, targets, num_classes)
    _check_class_weight(class_weight)
    present = np.unique(y)
    if len(present) == 1:  # nothing to discriminate: always the one class seen
        linear = nn.Linear(X.shape[1], num_classes)
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.fill_(ABSENT_CLASS_BIAS)
            linear.bias[int(present[0])] = 0.0
        return linear
    scaler, clf = fit_logreg(X, y, class_weight=class_weight, C=C, seed=seed,
                             max_iter=max_iter, tol=tol, num_threads=num_threads)
    return logreg_to_linear(scaler, clf, num_classes)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _class_weights(y: np.ndarray, num_classes: int, class_weight) -> torch.Tensor | None:
    if class_weight is None:
        return None
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(num_classes, dtype=np.float64)
    if class_weight == "balanced":
        w[present] = len(y) / (present.sum() * counts[present])
    else:
        for c, value in class_weight.items():
            if not 0 <= int(c) < num_classes:
                raise FeaturesError(f"class_weight names class {c}, outside 0..{num_classes - 1}")
            w[int(c)] = float(value)
    return torch.tensor(w, dtype=torch.float32)


def fit_mlp_head(features, targets, num_classes: int, *, class_weight="balanced",
                 hidden: int = 256, dropout: float = 0.5, epochs: int = 100, lr: float = 1e-3,
                 weight_decay: float = 1e-2, batch_size: int = 256, label_smoothing: float = 0.0,
                 seed: int = 0, num_threads: int | None = 1) -> nn.Sequential:
    """A one-hidden-layer MLP head on standardised features, trained with AdamW.

    Returns ``nn.Sequential(Linear(D, hidden), ReLU, Dropout(dropout), Linear(hidden, C))`` in
    eval mode, with the standardisation folded into the first Linear (it takes raw features).
    Mini-batches of ``batch_size`` (one full batch when N is smaller), cosine learning-rate
    decay over ``epochs``, class-weighted cross-entropy (``"balanced"``, None or a dict).
    Deterministic for a given ``seed`` (the global torch RNG is left untouched). Classes
    absent from ``targets`` get output bias :data:`ABSENT_CLASS_BIAS`. ``num_threads``: torch
    threads while training (1 by default: these matrices are small, and one thread is fastest
    and immune to a busy machine); None keeps the current setting.
    """
    X, y = _check_xy(features, targets, num_classes)
    _check_class_weight(class_weight)
    if hidden < 1 or epochs < 0 or batch_size < 1 or not 0 <= dropout < 1:
        raise FeaturesError(f"invalid MLP settings: hidden={hidden}, epochs={epochs}, "
                            f"batch_size={batch_size}, dropout={dropout}")
    x64 = X.astype(np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    std[std < 1e-12] = 1.0
    Z = torch.from_numpy(((x64 - mean) / std).astype(np.float32))
    T = torch.from_numpy(y)
    n, d = Z.shape
    weights = _class_weights(y, num_classes, class_weight)

    with torch.random.fork_rng(devices=[]), _torch_threads(num_threads):
        torch.manual_seed(seed)
        net = _mlp(d, hidden, dropout, num_classes)
        first, last = net[0], net[3]
        gen = torch.Generator().manual_seed(seed)
        loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(n / batch_size)
        total = max(1, epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        net.train()
        with torch.enable_grad():
            for _ in range(epochs):
                order = torch.randperm(n, generator=gen)
                for s in range(steps_per_epoch):
                    idx = order[s * batch_size:(s + 1) * batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(net(Z[idx]), T[idx])
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
    net.eval()
    with torch.no_grad():  # fold (x - mean) / std into the first layer
        w = first.weight.double() / torch.from_numpy(std)
        b = first.bias.double() - w @ torch.from_numpy(mean)
        first.weight.copy_(w)
        first.bias.copy_(b)
        absent = torch.from_numpy(np.bincount(y, minlength=num_classes) == 0)
        last.weight[absent] = 0.0
        last.bias[absent] = ABSENT_CLASS_BIAS
    return net


def _head_shape(head: nn.Module) -> tuple[int, int]:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"head {type(head).__name__} has no nn.Linear layer")
    return linears[0].in_features, linears[-1].out_features


def head_to_classifier(backbone: nn.Module, head: nn.Module, num_classes: int):
    """A :class:`~dermlearn.models.lesion_classifier.LesionClassifier` = ``backbone`` + ``head``, in eval mode.

    An ``nn.Linear`` head is copied into ``LesionClassifier.head``; any other head (the MLP's
    ``nn.Sequential``) replaces it, so ``classifier(images) == head(backbone(images))``.
    ``backbone`` must give (N, D) features (``num_classes=0``); a LesionClassifier's backbone
    is used. The backbone is shared, not copied.
    """
    from dermlearn.models.backbones import feature_dim
    from dermlearn.models.lesion_classifier import LesionClassifier

    backbone = feature_extractor(backbone)
    dim = feature_dim(backbone)
    d_in, d_out = _head_shape(head)
    if d_in != dim or d_out != num_classes:
        raise ModelError(f"head maps {d_in} -> {d_out} but the backbone gives {dim} features "
                         f"and there are {num_classes} classes")
    model = LesionClassifier(backbone, num_classes)
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            model.head.weight.copy_(head.weight)
            model.head.bias.copy_(head.bias)
    else:
        model.head = head
    return model.eval()


def predict_proba(head: nn.Module, features) -> np.ndarray:
    """Softmax probabilities (N, C) float32 of ``head`` on features (N, D), in eval mode."""
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            logits = head(torch.as_tensor(np.asarray(features, dtype=np.float32)))
            return torch.softmax(logits.double(), dim=1).float().numpy()
    finally:
        head.train(was_training)


_HEADS: dict[str, Callable[..., nn.Module]] = {"logreg": fit_logreg_head, "mlp": fit_mlp_head}


def _fold_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def cross_validate_features(features, targets, folds, num_classes: int, head: str = "logreg",
                            **kw) -> tuple[np.ndarray, list[nn.Module]]:
    """k-fold CV of a head on cached features: (out-of-fold probabilities (N, C), heads per fold).

    ``folds`` (N,) holds each sample's fold label (e.g. the ``fold`` column of
    :func:`dermlearn.splits.make_splits`). For every fold label, in numeric/sorted order, a head
    (``"logreg"`` or ``"mlp"``, options ``kw``) is fit on the other folds and predicts that
    fold. Samples labelled ``test`` (or None/NaN) take part in no fold: they are never trained
    on and their out-of-fold row is NaN.
    """
    if head not in _HEADS:
        raise FeaturesError(f"head must be one of {', '.join(_HEADS)}, not {head!r}")
    X, y = _check_xy(features, targets, num_classes)
    folds = np.asarray(folds, dtype=object)
    if folds.shape != (len(X),):
        raise FeaturesError(f"folds must be (N,) = ({len(X)},), got shape {folds.shape}")
    labels = np.array(["" if f is None or (isinstance(f, float) and np.isnan(f)) else str(f)
                       for f in folds], dtype=object)
    included = np.array([lab.strip().lower() not in _EXCLUDED_FOLDS for lab in labels])
    names = sorted(set(labels[included]), key=_fold_sort_key)
    if len(names) < 2:
        raise FeaturesError(f"cross-validation needs at least 2 folds, found {names}")
    fit = _HEADS[head]
    oof = np.full((len(X), num_classes), np.nan, dtype=np.float32)
    heads: list[nn.Module] = []
    for name in names:
        held = labels == name
        train = included & ~held
        fitted = fit(X[train], y[train], num_classes, **kw)
        oof[held] = predict_proba(fitted, X[held])
        heads.append(fitted)
    return oof, heads

"""The decision-support service without HTTP: model, backend, OOD screen, batching, results.

:class:`ServiceConfig` is what ``dermlearn serve`` is given; :class:`LesionService` turns an
uploaded photo (bytes) into the prediction document of ``POST /v1/predict``.

>>> service = LesionService(ServiceConfig("runs/ham/model", backend="onnx"))
>>> metadata, patient = service.patient_metadata({"age": "62", "sex": "male"})
>>> image, tensor = service.decode(photo_bytes)
>>> row = service.batcher.submit((tensor, metadata)).result()
>>> service.result(row, image, patient=patient)["malignancy_risk"]
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import ConfigDict, Field, field_validator

from dermlearn.data.images import DEFAULT_MAX_PIXELS, read_image
from dermlearn.errors import DermlearnError, ImageDecodeError, TaxonomyError
from dermlearn.errors.validation import ValidatedModel
from dermlearn.inference.backends import BACKENDS, BackendOutput, create_backend
from dermlearn.inference.identity import available_levels, feature_digest, model_identity
from dermlearn.inference.ood import OODUnavailable, read_ood, unavailable
from dermlearn.inference.predictor import Predictor
from dermlearn.models.lesion_classifier import METADATA_INPUTS
from dermlearn.serving.batching import MicroBatcher
from dermlearn.serving.model_card import build_model_card
from dermlearn.serving.uploads import DEFAULT_MAX_PARTS, UploadError

__all__ = ["DISCLAIMER", "EXPLAIN_METHODS", "PATIENT_FIELDS", "LesionService", "ServiceConfig"]

log = logging.getLogger(__name__)

ENV_CONFIG = "DERMLEARN_SERVE_CONFIG"
EXPLAIN_METHODS = ("saliency", "gradcam")
#: Longest side of the image the heatmap is computed on and returned at.
EXPLAIN_MAX_SIDE = 640
#: Optional form fields of ``POST /v1/predict``, used by models that fuse them.
PATIENT_FIELDS = METADATA_INPUTS
SEXES = ("male", "female")
MAX_AGE = 120
DISCLAIMER = ("Decision support only, not a diagnosis: see /v1/model for intended use and "
              "limitations.")
#: The ``ood`` reason of every response when the screen was turned off.
OOD_OFF = ("the out-of-distribution screen is off (--no-ood): this photo was not checked "
           "against the training images")


class ServiceConfig(ValidatedModel):
    """Settings of one service process (JSON-serialisable, for ``uvicorn --workers``).

    ``ServiceConfig(model_dir, backend=..., ...)``; a wrong value is a DermlearnError naming the
    setting ("service setting max_batch must be >= 1, not 0").
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    what: ClassVar[str] = "service setting"
    messages: ClassVar[dict[str, str]] = {
        "backend": "unknown backend {value!r}; expected one of {choices}",
        "max_upload_mb": "max upload size must be > 0 MB, got {value}"}

    model_dir: str = Field(description="the model directory served")
    backend: Literal[BACKENDS] = Field("torch", description="inference backend")
    threads: int | None = Field(None, ge=0, description="intra-op threads of the backend "
                                "(None or 0: all cores)")
    max_upload_mb: float = Field(20.0, gt=0, description="largest upload, in MB")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="largest decoded image, in "
                            "pixels")
    keep_uploads: str | None = Field(None, description="folder every upload is saved in; "
                                     "None: none kept")
    max_batch: int = Field(16, ge=1, description="most images scored in one micro-batch")
    max_wait_ms: float = Field(5.0, ge=0, description="longest wait for a micro-batch to fill, "
                               "in ms")
    top_k: int = Field(3, ge=1, description="diagnoses listed per prediction by default")
    onnx_path: str | None = Field(None, description="the ONNX export (onnx backend)")
    decode_concurrency: int = Field(0, ge=0, description="uploads decoded at once; 0: threads "
                                    "+ 2")
    ood: bool = Field(True, description="require the out-of-distribution screen (refuse to "
                      "start without it); False: serve with it off, saying so (--no-ood)")
    max_parts: int = Field(DEFAULT_MAX_PARTS, ge=1, description="most multipart parts in one "
                           "upload")
    max_concurrency: int = Field(64, ge=1, description="requests handled at once (probes "
                                 "excluded); more: 503")
    max_queue: int = Field(32, ge=1, description="predictions decoding or waiting for the "
                           "model; more: 503")
    min_image_side: int = Field(32, ge=1, description="shortest accepted image side, in pixels "
                                "(422 unusable_image below)")
    token_file: str | None = Field(None, description="file holding the bearer token for /v1/* "
                                   "and /metrics; None: $DERMLEARN_TOKEN, else no token")

    @field_validator("model_dir", "keep_uploads", "onnx_path", "token_file", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def to_env(self) -> str:
        return json.dumps(self.model_dump())

    @classmethod
    def from_env(cls) -> ServiceConfig:
        raw = os.environ.get(ENV_CONFIG)
        if not raw:
            raise DermlearnError(f"{ENV_CONFIG} is not set: start the service with "
                                 "`dermlearn serve MODEL`")
        return cls(**json.loads(raw))


class LesionService:
    """Loads the model once and answers predictions (thread-safe)."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.started = time.time()
        self.predictor = load_predictor(config.model_dir)
        self.model_dir = self.predictor.directory
        self.ood = require_ood(self.predictor) if config.ood else None
        self.backend = create_backend(self.model_dir, config.backend, predictor=self.predictor,
                                      threads=config.threads, onnx_path=config.onnx_path)
        self.model_id, self.version = model_identity(self.model_dir, self.predictor.config)
        self.levels = available_levels(self.predictor)
        self.card = build_model_card(self.predictor, backend=self.backend.name,
                                     ood=self.ood.summary() if self.ood else unavailable(OOD_OFF))
        #: Called with each micro-batch's size (metrics), from the batcher's thread.
        self.on_batch: Callable[[int], None] | None = None
        self.names = {c["id"]: c["name"] for c in self.card["classes"]}
        self.malignant_groups = self._malignant_mask()
        # Explanations use the PyTorch members with hooks; one at a time.
        self.explain_lock = threading.Lock()
        # Items: (preprocessed image (3, H, W), age/sex/site encoding (M,) or None).
        self.batcher: MicroBatcher[tuple[torch.Tensor, np.ndarray | None], BackendOutput] = \
            MicroBatcher(self._run_batch, max_batch=config.max_batch,
                         max_wait_ms=config.max_wait_ms)
        cores = os.cpu_count() or 1
        self.decode_concurrency = config.decode_concurrency or (config.threads or cores) + 2

    # -- model ------------------------------------------------------------------------------
    def _malignant_mask(self) -> np.ndarray | None:
        """Which training classes are malignant (PA to ``malignant_vs_benign``), if known."""
        try:
            grouped, groups = self.predictor.to_level(np.eye(len(self.predictor.classes)),
                                                      "malignant_vs_benign")
        except TaxonomyError:
            return None
        return grouped[:, groups.index("malignant")] > 0.5

    def _run_batch(self, items: list[tuple[torch.Tensor, np.ndarray | None]]
                   ) -> list[BackendOutput]:
        if self.on_batch is not None:
            self.on_batch(len(items))
        images = torch.stack([tensor for tensor, _ in items])
        metadata = (torch.from_numpy(np.stack([m for _, m in items]))
                    if items[0][1] is not None else None)
        out = self.backend.infer(images, metadata)
        return [BackendOutput(out.probabilities[i:i + 1], out.features[i:i + 1])
                for i in range(len(items))]

    # -- requests ---------------------------------------------------------------------------
    def patient_metadata(self, fields: Mapping[str, str]) -> tuple[np.ndarray | None,
                                                                   dict[str, Any]]:
        """Check the optional ``age`` (years), ``sex`` and ``site`` form fields.

        Returns (the model's encoding (M,) float32 -- "unknown" for what was not given -- or
        None when the model does not fuse them; the response's ``metadata`` block).
        :class:`UploadError` 422 for an age or sex that cannot be read.
        """
        age_text, sex, site = (fields.get(name, "").strip() for name in PATIENT_FIELDS)
        age = None
        if age_text:
            try:
                age = float(age_text)
            except ValueError:
                age = float("nan")
            if not 0 <= age <= MAX_AGE:
                raise UploadError(422, "bad_metadata", f"age must be a number of years "
                                                       f"between 0 and {MAX_AGE}")
        sex = sex.lower() or None
        if sex == "unknown":
            sex = None
        if sex is not None and sex not in SEXES:
            raise UploadError(422, "bad_metadata", f"sex must be one of {', '.join(SEXES)} "
                                                   f"or unknown")
        encoder = self.predictor.metadata_encoder
        given = {"age": age, "sex": sex, "site": site or None}
        if encoder is None:
            note = ("this model does not use age, sex or site"
                    if any(v is not None for v in given.values()) else None)
            return None, {"fused": False, **given, "note": note}
        known = {s.lower(): s for s in encoder.sites}
        note = None
        if site and site.lower() not in known:
            note = f"site {site!r} is not one of the training sites: encoded as other"
        vector = encoder.encode(age, sex, known.get(site.lower()) if site else None)
        return vector, {"fused": True, **given, "note": note}

    def decode(self, data: bytes) -> tuple[Image.Image, torch.Tensor]:
        """Decode (content sniffed, pixel limit, EXIF, any mode to RGB) and preprocess one
        upload; :class:`UploadError` with the HTTP status when it cannot be used (a side
        under ``min_image_side`` pixels: 422 ``unusable_image``, from the header when it can be
        read before decoding)."""
        self._check_size(_declared_size(data))
        try:
            image = read_image(data, max_pixels=self.config.max_pixels)
        except ImageDecodeError as exc:
            reason = exc.reason or str(exc)
            if reason.startswith("image too large"):  # the pixel limit (decompression bomb)
                raise UploadError(413, "image_too_large", reason) from None
            if reason.startswith(("not a recognised image format", "unsupported image format")):
                raise UploadError(415, "unsupported_image", reason) from None
            raise UploadError(422, "unreadable_image", reason) from None
        self._check_size(image.size)
        try:
            tensor = self.backend.preprocess_images([image])[0]
        except Exception as exc:  # e.g. a 1x1 image the crop cannot handle
            raise UploadError(422, "unusable_image",
                              f"image cannot be preprocessed ({type(exc).__name__}: {exc})"
                              ) from None
        return image, tensor

    def _check_size(self, size: tuple[int, int] | None) -> None:
        side = self.config.min_image_side
        if size is not None and min(size) < side:
            raise UploadError(422, "unusable_image", f"the image is {size[0]}x{size[1]} pixels: "
                                                     f"too small to be a photo of a lesion (each "
                                                     f"side must be at least {side} px)")

    def result(self, output: BackendOutput, image: Image.Image, *, top_k: int | None = None,
               timing: dict[str, float] | None = None,
               patient: dict[str, Any] | None = None) -> dict[str, Any]:
        """The prediction document for one image (``patient``: the block from
        :meth:`patient_metadata`; default: nothing given)."""
        probs = np.asarray(output.probabilities, dtype=np.float64).reshape(1, -1)
        classes = self.predictor.classes
        order = np.argsort(-probs[0], kind="stable")[:max(1, top_k or self.config.top_k)]
        levels = {}
        for level in self.levels:
            values, groups = self.predictor.to_level(probs, level)
            levels[level] = {g: float(v) for g, v in zip(groups, values[0])}
        temperature = self.predictor.temperature
        calibrated = bool(self.predictor.config.get("calibration")) or temperature != 1.0
        if self.malignant_groups is not None:
            risk = {"probability": float(probs[0, self.malignant_groups].sum()),
                    "temperature": temperature, "calibrated": calibrated,
                    "note": None if calibrated else "temperature 1: no calibration fitted"}
        else:
            risk = {"probability": None, "temperature": temperature, "calibrated": calibrated,
                    "note": "the model's classes do not separate malignant from benign"}
        if self.ood is not None:
            ood = self.ood.assess(np.asarray(output.features).reshape(1, -1))[0]
        else:
            ood = unavailable(OOD_OFF)
        return {
            "model": {"id": self.model_id, "version": self.version, "backend": self.backend.name},
            "image": {"width": image.width, "height": image.height},
            "probabilities": {c: float(p) for c, p in zip(classes, probs[0])},
            "top_k": [{"id": classes[i], "name": self.names.get(classes[i], classes[i]),
                       "probability": float(probs[0, i])} for i in order],
            "levels": levels,
            "malignancy_risk": risk,
            "ood": ood,
            "metadata": patient or self.patient_metadata({})[1],
            "timing_ms": timing or {},
            "disclaimer": DISCLAIMER,
        }

    def explain(self, image: Image.Image, method: str,
                metadata: np.ndarray | None = None) -> dict[str, Any]:
        """Heatmap overlay (base64 PNG) by :mod:`dermlearn.explain`, always on the PyTorch
        model (also with the ONNX backend); ``metadata`` (M,) as from :meth:`patient_metadata`."""
        if method not in EXPLAIN_METHODS:
            raise UploadError(422, "bad_explain", f"explain must be one of "
                                                  f"{', '.join(EXPLAIN_METHODS)}")
        try:
            from dermlearn.explain import explain_images, overlay
        except ImportError as exc:
            raise UploadError(501, "explain_unavailable",
                              f"explanations are not available in this installation ({exc})"
                              ) from None
        small = image.copy()
        small.thumbnail((EXPLAIN_MAX_SIDE, EXPLAIN_MAX_SIDE), Image.Resampling.BICUBIC)
        # With the torch backend the batcher runs the same modules: share its lock so that
        # neither sees the other's hooks.
        shared = self.predictor.lock if self.backend.name == "torch" else threading.RLock()
        with self.explain_lock, shared:
            explanation = explain_images(
                self.predictor, [small], method,
                metadata=None if metadata is None else torch.from_numpy(metadata[None]))[0]
        picture = overlay(small, explanation.heatmap)
        buf = io.BytesIO()
        picture.convert("RGB").save(buf, format="PNG", optimize=False)
        return {"method": method, "target": explanation.label, "media_type": "image/png",
                "png_base64": base64.b64encode(buf.getvalue()).decode("ascii"),
                "width": picture.width, "height": picture.height}

    def health(self) -> dict[str, Any]:
        """Model, backend, OOD screen and batching statistics (``/health``'s body)."""
        return {"status": "ok", "model_id": self.model_id, "version": self.version,
                "backend": self.backend.name, "ood_available": self.ood is not None,
                "ood": "on" if self.ood is not None else "off (--no-ood)",
                "uptime_s": round(time.time() - self.started, 3),
                "batching": self.batcher.stats()}

    def close(self) -> None:
        self.batcher.close()


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """An image's size from its header, without decoding (None when Pillow cannot tell)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - read_image says what is wrong with it
        return None


def load_predictor(model_dir: str | os.PathLike) -> Predictor:
    """:meth:`Predictor.load` with its failures as one :class:`DermlearnError` line, never a
    traceback (a config.json whose classes do not match the weights is the models layer's
    ModelError already)."""
    try:
        return Predictor.load(model_dir)
    except DermlearnError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch, safetensors, JSON: one clear line
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DermlearnError(f"{model_dir}: the model cannot be loaded ({type(exc).__name__}: "
                             f"{first})") from None


def require_ood(predictor: Predictor) -> Any:
    """The model's OOD screen, or a :class:`DermlearnError` saying why it cannot be loaded and
    what to do: the service does not run without its screen unless told to (``--no-ood``)."""
    try:
        return read_ood(predictor.directory,
                        feature_digest=feature_digest(predictor.directory, predictor.config))
    except OODUnavailable as exc:
        raise DermlearnError(
            f"{predictor.directory}: refusing to serve without the out-of-distribution screen: "
            f"{exc.reason}. Refit it (fit_ood, docs/serving.md), or start with --no-ood to serve "
            f"with the screen off (the model card and every response then say so)") from None


def check_model(config: ServiceConfig) -> None:
    """Load what :class:`LesionService` loads -- the model, and its OOD screen unless
    ``config.ood`` is False -- and drop it: the refusal of ``serve --workers N`` comes once,
    from the parent, instead of from every worker."""
    predictor = load_predictor(config.model_dir)
    if config.ood:
        require_ood(predictor)

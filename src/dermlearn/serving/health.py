"""Liveness and readiness: ``/health/live`` answers while the process serves HTTP;
``/health/ready`` (and its alias ``/health``) only once the model and its OOD screen are loaded
(or the screen is off by ``--no-ood``) and a warm-up prediction through the whole path --
decode, preprocessing, the micro-batcher, the backend, the OOD screen, the response document --
succeeded. The warm-up runs in a thread as the app starts, so probes answer meanwhile.
"""
from __future__ import annotations

import io
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    from dermlearn.serving.service import LesionService

__all__ = ["Readiness", "warm_up", "warm_up_image"]

log = logging.getLogger("dermlearn.serving")

#: Longest a warm-up prediction may take before the service is declared not ready (seconds).
WARM_UP_TIMEOUT_S = 300.0


class Readiness:
    """``starting`` -> ``ready`` or ``failed`` (with the reason), and when."""

    def __init__(self) -> None:
        self.state: Literal["starting", "ready", "failed"] = "starting"
        self.reason: str | None = None
        self.warm_up_ms: float | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "state": self.state, "reason": self.reason,
                "warm_up_ms": self.warm_up_ms}


def warm_up_image(size: int = 256) -> bytes:
    """A PNG of a smooth brown disc on skin tone (deterministic): what the warm-up sends."""
    yy, xx = np.mgrid[:size, :size]
    weight = np.clip(1.2 - np.hypot(yy - size / 2, xx - size / 2) / (size / 3), 0, 1)[..., None]
    rgb = np.array([224, 172, 150.0]) * (1 - weight) + np.array([110, 70, 50.0]) * weight
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def warm_up(service: LesionService, readiness: Readiness) -> None:
    """One prediction through the service's whole path (blocking; run it in a thread). Sets
    ``readiness`` to ready, or to failed with the reason (logged as an error)."""
    t0 = time.perf_counter()
    try:
        metadata, patient = service.patient_metadata({})
        image, tensor = service.decode(warm_up_image())
        with service.batcher.reserve() as slot:
            future = slot.submit((tensor, metadata))
        output = future.result(timeout=WARM_UP_TIMEOUT_S)
        result = service.result(output, image, patient=patient)
        probabilities = np.array(list(result["probabilities"].values()))
        if not (np.isfinite(probabilities).all() and abs(probabilities.sum() - 1) < 1e-3):
            raise ValueError(f"the model returned invalid probabilities {probabilities}")
        ood = result["ood"]
        if service.ood is not None and not (ood["available"] and np.isfinite(ood["score"])):
            raise ValueError(f"the OOD screen returned {ood}")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with the reason
        readiness.state, readiness.reason = "failed", f"warm-up prediction failed: " \
                                                      f"{type(exc).__name__}: {exc}"
        log.error("not ready: %s", readiness.reason)
        return
    readiness.warm_up_ms = round((time.perf_counter() - t0) * 1e3, 1)
    readiness.state = "ready"
    log.info("ready: warm-up prediction in %.0f ms", readiness.warm_up_ms)

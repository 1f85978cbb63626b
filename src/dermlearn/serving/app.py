"""The web service (FastAPI): prediction API, model card, health, the page at ``/``.

>>> app = create_app(ServiceConfig("runs/ham/model", backend="onnx"))
>>> uvicorn.run(app)                    # or: dermlearn serve runs/ham/model --backend onnx

Endpoints: ``POST /v1/predict`` (multipart field ``image``, optional fields ``age``, ``sex``,
``site`` for models that fuse them; ``?explain=saliency|gradcam``, ``?top_k=N``),
``GET /v1/model``, ``GET /health/live``, ``GET /health/ready`` (and its alias ``/health``),
``GET /metrics`` (Prometheus), ``GET /`` (the page), ``/docs`` and ``/redoc`` (served offline
from fastapi-offline's bundled assets when installed). Every error is JSON
``{"detail": ..., "code": ...}``; uploads stay in memory and are never logged, and are written
to disk only with ``keep_uploads``. Admission (token, concurrency, queue) is
:mod:`dermlearn.serving.limits`; readiness and the warm-up :mod:`dermlearn.serving.health`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dermlearn import __version__
from dermlearn.serving.auth import resolve_token
from dermlearn.serving.health import Readiness, warm_up
from dermlearn.serving.limits import Guard, PredictionQueue
from dermlearn.serving.metrics import CONTENT_TYPE, ServiceMetrics
from dermlearn.serving.schemas import ErrorResponse, Health, Liveness, PredictionResponse
from dermlearn.serving.service import PATIENT_FIELDS, LesionService, ServiceConfig
from dermlearn.serving.uploads import UploadError, read_multipart_file, save_upload

__all__ = ["STATIC_DIR", "app_from_env", "create_app"]

log = logging.getLogger("dermlearn.serving")

STATIC_DIR = Path(__file__).parent / "static"

_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 413, 415, 422, 501, 503)}
_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {
                "image": {"type": "string", "format": "binary",
                          "description": "photo of one skin lesion (JPEG, PNG, TIFF, BMP or "
                                         "WebP; format sniffed)"},
                "age": {"type": "number", "minimum": 0, "maximum": 120,
                        "description": "optional: the patient's age in years"},
                "sex": {"type": "string", "enum": ["male", "female", "unknown"],
                        "description": "optional"},
                "site": {"type": "string", "description": "optional: anatomical site as in "
                                                          "the training data (e.g. back)"}}}}},
    }
}


def _error(status: int, code: str, detail: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _offline_docs_assets() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def create_app(config: ServiceConfig | str | Path, **settings) -> FastAPI:
    """The FastAPI app for ``config`` (a :class:`ServiceConfig`, or a model directory plus
    ServiceConfig fields as keywords). The model is loaded here, once."""
    if not isinstance(config, ServiceConfig):
        config = ServiceConfig(str(config), **settings)
    token = resolve_token(config.token_file)
    service = LesionService(config)
    limiter = anyio.CapacityLimiter(service.decode_concurrency)
    readiness = Readiness()
    queue = PredictionQueue(config.max_queue)
    metrics = ServiceMetrics(queue_depth=lambda: queue.depth,
                             in_flight=lambda: guard.in_flight if guard else 0,
                             ready=lambda: float(readiness.ready))
    service.on_batch = metrics.batch_size.observe
    guard: Guard | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        log.info("serving %s %s (%s backend, OOD screen %s, access %s)", service.model_id,
                 service.version, service.backend.name,
                 "on" if service.ood else "OFF (--no-ood)",
                 "by bearer token" if token else "open (no token)")
        warming = asyncio.create_task(anyio.to_thread.run_sync(warm_up, service, readiness))
        try:
            yield
        finally:
            await asyncio.shield(warming)
            service.close()

    assets = _offline_docs_assets()
    app = FastAPI(
        title="dermlearn skin-lesion decision support",
        version=__version__,
        summary="Probabilities over skin-lesion classes for one photo, with taxonomy levels, a "
                "malignancy risk, an out-of-distribution screen and heatmaps. Decision support "
                "only, not a diagnosis.",
        lifespan=lifespan,
        docs_url=None if assets else "/docs",
        redoc_url=None if assets else "/redoc",
    )
    app.state.service = service
    app.state.readiness = readiness

    def _guard(inner, **_):
        nonlocal guard
        guard = Guard(inner, token=token, max_concurrency=config.max_concurrency,
                      metrics=metrics)
        return guard

    app.add_middleware(_guard)

    # -- errors: always JSON, always 4xx for what the client sent ---------------------------
    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        log.info("refused %s %s: %s (%s)", request.method, request.url.path, exc.status,
                 exc.code)
        if request.url.path == "/v1/predict":
            metrics.refused.labels(exc.code).inc()
        headers = {**exc.headers, **({"Connection": "close"} if exc.close else {})}
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors())
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s", request.method, request.url.path,
                  type(exc).__name__, exc_info=exc)
        return _error(500, "internal_error", "internal error; the request was not processed")

    # -- API ------------------------------------------------------------------------------
    @app.post("/v1/predict", response_model=PredictionResponse, responses=_ERRORS,
              openapi_extra=_UPLOAD_SCHEMA, tags=["prediction"],
              summary="Classify one photo of a skin lesion")
    async def predict(
        request: Request,
        explain: Literal["saliency", "gradcam"] | None = Query(
            None, description="add a heatmap overlay computed with this method"),
        top_k: int | None = Query(None, ge=1, le=50, description="how many classes to list "
                                     "in top_k (default: the server's setting, 3)"),
    ) -> dict:
        """Probabilities per class, taxonomy levels by PA, top-k, a malignancy risk, an
        out-of-distribution flag and, with ``explain``, a heatmap (base64 PNG). Models that
        fuse age, sex and site take them as optional form fields (unknown when absent)."""
        t0 = time.perf_counter()
        queue.check(close=True)  # full: refuse before reading the upload
        try:
            upload = await read_multipart_file(
                request.headers.get("content-type"), request.headers.get("content-length"),
                request.stream(), text_fields=PATIENT_FIELDS, max_bytes=config.max_upload_bytes,
                max_parts=config.max_parts)
        except ClientDisconnect:
            raise UploadError(400, "client_disconnected", "the upload was interrupted") from None
        metadata, patient = service.patient_metadata(upload.fields)
        if config.keep_uploads:
            await anyio.to_thread.run_sync(save_upload, config.keep_uploads, upload.data)
        t1 = time.perf_counter()
        with queue.admit(), service.batcher.reserve() as slot:
            image, tensor = await anyio.to_thread.run_sync(service.decode, upload.data,
                                                           limiter=limiter)
            del upload
            future = slot.submit((tensor, metadata))
            t2 = time.perf_counter()
            output = await asyncio.wrap_future(future)
        t3 = time.perf_counter()
        timing = {"read": (t1 - t0) * 1e3, "decode": (t2 - t1) * 1e3, "model": (t3 - t2) * 1e3}
        result = service.result(output, image, top_k=top_k, timing=timing, patient=patient)
        ood = result["ood"]
        metrics.ood.labels("off" if not ood["available"] else
                           "flagged" if ood["flag"] else "passed").inc()
        if explain:
            result["explanation"] = await anyio.to_thread.run_sync(
                service.explain, image, explain, metadata, limiter=limiter)
            timing["explain"] = (time.perf_counter() - t3) * 1e3
        timing["total"] = (time.perf_counter() - t0) * 1e3
        return result

    @app.get("/v1/model", tags=["model"], summary="Model card")
    async def model_card() -> dict:
        """Classes, taxonomy levels, preprocessing, training data, validation metrics (with
        CIs where recorded), OOD statistics, intended use and limitations."""
        return service.card

    def ready_document() -> JSONResponse:
        body = {**service.health(), **readiness.as_dict()}
        body["status"] = "ok" if readiness.ready else readiness.state
        return JSONResponse(body, status_code=200 if readiness.ready else 503)

    @app.get("/health/ready", response_model=Health, tags=["service"],
             responses={503: {"model": Health}})
    async def health_ready() -> JSONResponse:
        """Readiness: 200 once the model and its OOD screen (unless ``--no-ood``) are loaded
        and a warm-up prediction succeeded; 503 before (``starting``) or after a failed warm-up
        (``failed``, with the reason)."""
        return ready_document()

    @app.get("/health", response_model=Health, tags=["service"],
             responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """The same as ``/health/ready`` (kept for existing probes)."""
        return ready_document()

    @app.get("/health/live", response_model=Liveness, tags=["service"])
    async def health_live() -> dict:
        """Liveness: the process answers HTTP (no work done; never blocked by predictions)."""
        return {"status": "alive", "uptime_s": round(time.time() - service.started, 3)}

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text format): requests by route and status, latency, queue
        depth, refused images by reason, OOD screen results, batch sizes, readiness."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # -- the page and the offline docs ----------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    if assets:
        from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def swagger_ui():
            return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - docs",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon.png")

        @app.get("/redoc", include_in_schema=False)
        async def redoc():
            return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                                  redoc_js_url="/docs-assets/redoc.standalone.js",
                                  redoc_favicon_url="/docs-assets/favicon.png",
                                  with_google_fonts=False)

    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` / ``--workers N``: the settings come from the
    ``DERMLEARN_SERVE_CONFIG`` environment variable (JSON of :class:`ServiceConfig`)."""
    return create_app(ServiceConfig.from_env())

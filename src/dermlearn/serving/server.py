"""``dermlearn serve``: run the web service under uvicorn (one process or ``--workers N``),
with the server's limits (:mod:`dermlearn.serving.protocol`) and the access rule: an address
other than loopback needs a token (or ``insecure=True``)."""
from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dermlearn.atomic import check_output_dir
from dermlearn.errors import DermlearnError
from dermlearn.inference.predictor import model_directory
from dermlearn.inference.scoring import check_batch_size
from dermlearn.models.lesion_classifier import read_config
from dermlearn.parallel import check_threads
from dermlearn.serving.auth import ENV_TOKEN, is_loopback, resolve_token
from dermlearn.serving.protocol import DEFAULT_REQUEST_TIMEOUT_S, ServiceHTTPProtocol
from dermlearn.serving.service import ENV_CONFIG, ServiceConfig
from dermlearn.serving.uploads import DEFAULT_MAX_PARTS

__all__ = ["serve", "terminate_cleanly"]

log = logging.getLogger("dermlearn.serving")


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``) and SIGHUP end the process as SystemExit(128 + n)
    raised in the main thread, so that ``finally`` blocks run (an atomic write removes its
    temporary file) instead of the process vanishing mid-write. Handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          backend: str = "torch", workers: int = 1, threads: int | None = None,
          keep_uploads: str | Path | None = None, max_upload_mb: float = 20.0,
          max_megapixels: float = 64.0, max_batch: int = 16, max_wait_ms: float = 5.0,
          log_level: str = "info", token_file: str | Path | None = None,
          insecure: bool = False, ood: bool = True,
          request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, keep_alive_s: float = 5.0,
          max_concurrency: int = 64, max_queue: int = 32, max_connections: int = 256,
          max_parts: int = DEFAULT_MAX_PARTS, max_header_kb: int = 16,
          min_image_side: int = 32) -> int:
    """Serve ``model`` until interrupted; returns the exit status.

    Each worker process loads its own copy of the model; ``threads`` (default: cores /
    workers) bounds each one's intra-op parallelism. With ``backend="onnx"`` the ONNX export is
    made (or found up to date) once, before the workers start; ``backend="auto"`` (the CLI's
    default) chooses as ``predict``'s (:func:`~dermlearn.inference.backends.resolve_backend`):
    ONNX Runtime when installed, else PyTorch, also when the export cannot be made (a warning).

    Refuses (a :class:`DermlearnError`, before loading anything) a ``host`` other than loopback
    without a token (``token_file`` or ``$DERMLEARN_TOKEN``) unless ``insecure``, and a model
    whose OOD screen cannot be loaded unless ``ood=False``. Limits: ``request_timeout_s`` for a
    request's head and body, ``keep_alive_s`` idle, ``max_header_kb`` of request head,
    ``max_connections`` open connections (uvicorn's ``timeout_keep_alive``,
    ``h11_max_incomplete_event_size``, ``limit_concurrency``); the app's in
    :class:`~dermlearn.serving.service.ServiceConfig`.
    """
    import uvicorn

    if not 0 < port < 65536:
        raise DermlearnError(f"port must be 1-65535, got {port}")
    if workers < 1:
        raise DermlearnError(f"--workers must be >= 1, got {workers}")
    for name, value in (("--request-timeout-s", request_timeout_s),
                        ("--keep-alive-s", keep_alive_s), ("--max-concurrency", max_concurrency),
                        ("--max-queue", max_queue), ("--max-connections", max_connections),
                        ("--max-parts", max_parts), ("--max-header-kb", max_header_kb),
                        ("--min-image-side", min_image_side)):
        if not value > 0:
            raise DermlearnError(f"{name} must be > 0, got {value}")
    token = resolve_token(token_file)
    if not token and not is_loopback(host) and not insecure:
        raise DermlearnError(
            f"refusing to listen on {host} without an access token: anyone who can reach that "
            f"address could use the service. Give --token-file FILE (or set {ENV_TOKEN}), or "
            f"--insecure when a proxy or network policy in front controls who gets in")
    max_batch = check_batch_size(max_batch, "--max-batch")
    threads = check_threads(threads)
    if keep_uploads:
        check_output_dir(keep_uploads)
    model_dir = model_directory(model)
    read_config(model_dir)  # a clear error now rather than in every worker
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    onnx_path = None
    auto = backend == "auto"
    if auto:
        from dermlearn.inference.backends import resolve_backend

        backend = resolve_backend(backend)
    if backend == "onnx":
        from dermlearn.inference.onnx_export import ensure_onnx
        from dermlearn.serving.service import load_predictor

        predictor = load_predictor(model_dir)  # one line, not a traceback, when it cannot load
        try:
            with terminate_cleanly():  # a kill while exporting leaves no temporary file
                onnx_path = str(ensure_onnx(model_dir, predictor))
        except Exception as exc:  # noqa: BLE001 - auto, as predict's: PyTorch when no export
            if not auto:
                raise
            log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", model_dir, exc)
            backend = "torch"
        del predictor
    if keep_uploads:
        keep_uploads = Path(keep_uploads).resolve()
        keep_uploads.mkdir(parents=True, exist_ok=True)
        print(f"dermlearn serve: keeping every upload in {keep_uploads} (--keep-uploads)")
    config = ServiceConfig(
        str(model_dir.resolve()), backend=backend, threads=threads, max_upload_mb=max_upload_mb,
        max_pixels=int(max_megapixels * 1_000_000), keep_uploads=str(keep_uploads) if
        keep_uploads else None, max_batch=max_batch, max_wait_ms=max_wait_ms,
        onnx_path=onnx_path, ood=ood, max_parts=max_parts, max_concurrency=max_concurrency,
        max_queue=max_queue, min_image_side=min_image_side,
        token_file=str(Path(token_file).resolve()) if token_file else None)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:  %(name)s: %(message)s")
    # Malformed uploads are the client's problem, answered with a 4xx: don't let them flood the
    # log with parser and EXIF warnings (each request is still in the access log).
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    common = dict(host=host, port=port, log_level=log_level, server_header=False,
                  proxy_headers=True, timeout_keep_alive=keep_alive_s,
                  timeout_graceful_shutdown=10, limit_concurrency=max_connections,
                  h11_max_incomplete_event_size=max_header_kb * 1024,
                  http=functools.partial(ServiceHTTPProtocol,
                                         request_timeout=request_timeout_s))
    if workers == 1:
        from dermlearn.serving.app import create_app

        app = create_app(config)  # loads the model and its OOD screen: refuses here
    else:
        from dermlearn.serving.service import check_model

        check_model(config)  # once, before the workers, for a clear refusal
    print(f"dermlearn serve: http://{host}:{port}/ ({backend} backend, {workers} worker(s) x "
          f"{threads} thread(s)); API docs at /docs")
    screen = "on" if ood else "OFF (--no-ood): responses are not screened and say so"
    print(f"dermlearn serve: out-of-distribution screen {screen}; access "
          f"{'by bearer token' if token else 'open (no token)'}")
    if workers == 1:
        uvicorn.run(app, **common)
    else:
        os.environ[ENV_CONFIG] = config.to_env()
        uvicorn.run("dermlearn.serving.app:app_from_env", factory=True, workers=workers,
                    **common)
    return 0

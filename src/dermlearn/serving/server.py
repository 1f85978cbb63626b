"""``dermlearn serve``: run the web service under uvicorn (one process or ``--workers N``)."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from dermlearn.atomic import check_output_dir
from dermlearn.errors import DermlearnError
from dermlearn.inference.predictor import model_directory
from dermlearn.inference.scoring import check_batch_size
from dermlearn.models.lesion_classifier import read_config
from dermlearn.parallel import check_threads
from dermlearn.serving.service import ENV_CONFIG, ServiceConfig

__all__ = ["serve"]

log = logging.getLogger("dermlearn.serving")


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          backend: str = "torch", workers: int = 1, threads: int | None = None,
          keep_uploads: str | Path | None = None, max_upload_mb: float = 20.0,
          max_megapixels: float = 64.0, max_batch: int = 16, max_wait_ms: float = 5.0,
          log_level: str = "info") -> int:
    """Serve ``model`` until interrupted; returns the exit status.

    Each worker process loads its own copy of the model; ``threads`` (default: cores /
    workers) bounds each one's intra-op parallelism. With ``backend="onnx"`` the ONNX export is
    made (or found up to date) once, before the workers start; ``backend="auto"`` (the CLI's
    default) chooses as ``predict``'s (:func:`~dermlearn.inference.backends.resolve_backend`):
    ONNX Runtime when installed, else PyTorch, also when the export cannot be made (a warning).
    """
    import uvicorn

    if not 0 < port < 65536:
        raise DermlearnError(f"port must be 1-65535, got {port}")
    if workers < 1:
        raise DermlearnError(f"--workers must be >= 1, got {workers}")
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

        try:
            onnx_path = str(ensure_onnx(model_dir))
        except Exception as exc:  # noqa: BLE001 - auto, as predict's: PyTorch when no export
            if not auto:
                raise
            log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", model_dir, exc)
            backend = "torch"
    if keep_uploads:
        keep_uploads = Path(keep_uploads).resolve()
        keep_uploads.mkdir(parents=True, exist_ok=True)
        print(f"dermlearn serve: keeping every upload in {keep_uploads} (--keep-uploads)")
    config = ServiceConfig(
        str(model_dir.resolve()), backend=backend, threads=threads, max_upload_mb=max_upload_mb,
        max_pixels=int(max_megapixels * 1_000_000), keep_uploads=str(keep_uploads) if
        keep_uploads else None, max_batch=max_batch, max_wait_ms=max_wait_ms,
        onnx_path=onnx_path)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:  %(name)s: %(message)s")
    # Malformed uploads are the client's problem, answered with a 4xx: don't let them flood the
    # log with parser and EXIF warnings (each request is still in the access log).
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    common = dict(host=host, port=port, log_level=log_level, server_header=False,
                  proxy_headers=True, timeout_keep_alive=5, timeout_graceful_shutdown=10)
    print(f"dermlearn serve: http://{host}:{port}/ ({backend} backend, {workers} worker(s) x "
          f"{threads} thread(s)); API docs at /docs")
    if workers == 1:
        from dermlearn.serving.app import create_app

        uvicorn.run(create_app(config), **common)
    else:
        os.environ[ENV_CONFIG] = config.to_env()
        uvicorn.run("dermlearn.serving.app:app_from_env", factory=True, workers=workers,
                    **common)
    return 0

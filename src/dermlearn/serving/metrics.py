"""``GET /metrics``: the service's Prometheus metrics (the official ``prometheus-client``).

Each app has its own registry (several apps may live in one process, e.g. in tests); with
``--workers N`` each worker process answers with its own counts.

Metrics: ``dermlearn_http_requests_total{route,method,status}``,
``dermlearn_http_request_duration_seconds{route}`` (histogram), ``dermlearn_in_flight_requests``,
``dermlearn_prediction_queue_depth`` (predictions decoding or waiting for the model),
``dermlearn_images_refused_total{reason}`` (the error code of every refused prediction
request), ``dermlearn_ood_screen_total{result}`` (``flagged``, ``passed`` or ``off``),
``dermlearn_batch_size`` (histogram of micro-batch sizes) and ``dermlearn_ready`` (0/1).
"""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "ROUTES", "ServiceMetrics", "route_label"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Paths counted under their own label; everything else is "other" (bounded label values).
ROUTES = ("/", "/v1/predict", "/v1/model", "/health", "/health/live", "/health/ready",
          "/metrics", "/docs", "/redoc", "/openapi.json")
#: Latency buckets (seconds): a 10 ms model call to a 30 s heatmap under load.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def route_label(path: str) -> str:
    """The ``route`` label of a request path."""
    if path in ROUTES:
        return path
    for prefix in ("/static/", "/docs-assets/"):
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return "other"


class ServiceMetrics:
    """The service's collectors in one registry; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, *, queue_depth: Callable[[], float], in_flight: Callable[[], float],
                 ready: Callable[[], float]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("dermlearn_http_requests", "HTTP requests answered by the app",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("dermlearn_http_request_duration_seconds",
                                 "time from the request head to the end of the response "
                                 "(seconds)", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.refused = Counter("dermlearn_images_refused", "prediction requests refused, by "
                               "error code (e.g. unsupported_image, too_many_parts, "
                               "queue_full)", ["reason"], registry=r)
        self.ood = Counter("dermlearn_ood_screen", "predictions by out-of-distribution screen "
                           "result (flagged, passed, off)", ["result"], registry=r)
        self.batch_size = Histogram("dermlearn_batch_size", "images per model call "
                                    "(micro-batching)", buckets=(1, 2, 4, 8, 16, 32, 64),
                                    registry=r)
        Gauge("dermlearn_prediction_queue_depth", "predictions decoding or waiting for the "
              "model", registry=r).set_function(queue_depth)
        Gauge("dermlearn_in_flight_requests", "requests being handled (probes and /metrics not "
              "counted)", registry=r).set_function(in_flight)
        Gauge("dermlearn_ready", "1 when the model, its OOD screen and a warm-up prediction "
              "succeeded", registry=r).set_function(ready)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

"""Admission in front of the routes: the bearer token, the concurrent-request limit, the
bounded prediction queue, security headers and request metrics -- one pure ASGI middleware
(:class:`Guard`), so that a refused request costs microseconds and never reaches a route.

Limits here (the server's own -- timeouts, head size, connections -- are in
:mod:`dermlearn.serving.protocol`):

* ``max_concurrency``: requests handled at once (health probes and ``/metrics`` not counted);
  beyond it 503 ``overloaded`` with ``Retry-After``, before the body is read.
* ``max_queue``: predictions decoding or waiting for the model (:class:`PredictionQueue`);
  beyond it 503 ``queue_full`` with ``Retry-After``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dermlearn.serving.auth import authorized
from dermlearn.serving.metrics import ServiceMetrics, route_label
from dermlearn.serving.uploads import UploadError

__all__ = ["PROBES", "RETRY_AFTER_S", "Guard", "PredictionQueue", "error_body"]

#: Paths that are always answered: no token, no concurrency limit (load balancers' probes).
PROBES = frozenset({"/health", "/health/live", "/health/ready"})
#: ``Retry-After`` of a 503 (seconds).
RETRY_AFTER_S = 1
#: The page and its assets come from this server only.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
DOCS_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
            "connect-src 'self'; object-src 'none'; frame-ancestors 'none'")


def error_body(code: str, detail: str) -> bytes:
    """The service's JSON error document."""
    return json.dumps({"detail": detail, "code": code}).encode("utf-8")


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    if path.startswith("/v1/") or path == "/metrics" or path in PROBES:
        headers.append((b"cache-control", b"no-store"))
    if path in ("/docs", "/redoc"):
        headers.append((b"content-security-policy", DOCS_CSP.encode()))
    elif not path.startswith("/docs-assets"):
        headers.append((b"content-security-policy", CSP.encode()))
    return headers


class PredictionQueue:
    """Counts predictions past their upload (decoding, queued or in the model) and refuses new
    ones beyond ``limit`` (single event loop: a plain counter)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.depth = 0

    def check(self, *, close: bool = False) -> None:
        """:class:`UploadError` 503 ``queue_full`` when the queue is full (``close``: the
        request's body was not read, so its connection must be closed after the answer)."""
        if self.depth >= self.limit:
            raise UploadError(503, "queue_full", f"the prediction queue is full ({self.limit} "
                                                 f"waiting); retry in a moment",
                              headers={"Retry-After": str(RETRY_AFTER_S)}, close=close)

    @contextmanager
    def admit(self) -> Iterator[None]:
        self.check()
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


class Guard:
    """Pure ASGI middleware: token for ``/v1/*`` and ``/metrics`` (when one is set), the
    concurrency limit, security headers on every response, and request metrics."""

    def __init__(self, app: Any, *, token: str | None, max_concurrency: int,
                 metrics: ServiceMetrics):
        self.app = app
        self.token = token
        self.max_concurrency = max_concurrency
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        started = time.perf_counter()
        status = 500
        extra = _security_headers(path)

        async def send_with_headers(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()),
                                      *(h for h in extra if h[0] not in present)]
            await send(message)

        counted = path not in PROBES and path != "/metrics"
        try:
            if self.token and (path.startswith("/v1/") or path == "/metrics") and not \
                    authorized(_header(scope, b"authorization"), self.token):
                given = _header(scope, b"authorization") is not None
                await _reply(send_with_headers, 401, "unauthorized",
                             "the access token is not valid" if given else
                             "this service needs an access token: send the header "
                             "'Authorization: Bearer TOKEN'",
                             [(b"www-authenticate", b'Bearer realm="dermlearn"')])
            elif counted and self.in_flight >= self.max_concurrency:
                if path == "/v1/predict":
                    self.metrics.refused.labels("overloaded").inc()
                await _reply(send_with_headers, 503, "overloaded",
                             f"the service is handling {self.max_concurrency} requests, its "
                             f"limit; retry in a moment",
                             [(b"retry-after", str(RETRY_AFTER_S).encode()),
                              (b"connection", b"close")])
            elif counted:
                self.in_flight += 1
                try:
                    await self.app(scope, receive, send_with_headers)
                finally:
                    self.in_flight -= 1
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            self.metrics.observe(route_label(path), scope["method"], status,
                                 time.perf_counter() - started)


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def _reply(send: Any, status: int, code: str, detail: str,
                 headers: list[tuple[bytes, bytes]]) -> None:
    body = error_body(code, detail)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})

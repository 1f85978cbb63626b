"""The server's own limits: uvicorn's HTTP/1.1 (h11) protocol with timeouts and JSON errors.

uvicorn keeps a new connection open for as long as the client sends nothing, and reads a
request head or body at any pace (a connection that sends nothing, or one byte a second, stays
open for ever); its own error answers (malformed request 400, header too large, over
``limit_concurrency``) are plain text. :class:`ServiceHTTPProtocol` is the same protocol with:

* an idle timeout from the moment a connection opens (uvicorn's ``timeout_keep_alive``, which
  uvicorn starts only after a first response): a connection that sends nothing is closed;
* a request timeout: a request's head and body must arrive in full within ``request_timeout``
  seconds of its first byte, else 408 ``request_timeout`` and the connection is closed;
* ``limit_concurrency`` counted in open connections, answered with the service's JSON 503
  ``too_many_connections`` and ``Retry-After``;
* a request head larger than ``h11_max_incomplete_event_size`` bytes refused with 431
  ``header_too_large`` (h11 applies that size only to a head that arrives in pieces);
* uvicorn's malformed-request answers as JSON: 400 ``bad_http_request`` (``bad_content_length``
  for a malformed Content-Length), 501 for an unsupported Transfer-Encoding.

``dermlearn serve`` passes it to uvicorn as ``http=functools.partial(ServiceHTTPProtocol,
request_timeout=...)``. It relies on the h11 protocol's attributes (``conn``, ``cycle``,
``connections``, the keep-alive timer) of the uvicorn version pinned in pyproject.toml.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from dermlearn.serving.limits import RETRY_AFTER_S, error_body

__all__ = ["DEFAULT_REQUEST_TIMEOUT_S", "ServiceHTTPProtocol"]

log = logging.getLogger("dermlearn.serving")

DEFAULT_REQUEST_TIMEOUT_S = 30.0
#: Largest request head without ``h11_max_incomplete_event_size`` (bytes; h11's own default).
DEFAULT_MAX_HEAD_BYTES = 16 * 1024
_DONE = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


class _Connection(h11.Connection):
    """An h11 server connection that remembers the last protocol error it raised (uvicorn's
    handler keeps only a fixed message)."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise


def _raw_response(status: int, code: str, detail: str,
                  headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response with the service's JSON error that closes the
    connection (written directly, where no request/response cycle can carry it)."""
    body = error_body(code, detail)
    lines = [b"HTTP/1.1 %d %s" % (status, STATUS_PHRASES[status]),
             b"content-type: application/json", b"content-length: %d" % len(body),
             b"connection: close", *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ServiceHTTPProtocol(H11Protocol):
    """uvicorn's h11 protocol with the idle and request timeouts, a JSON connection limit and
    JSON protocol errors (see the module docstring)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S):
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self.conn = _Connection(h11.SERVER, self.max_head_bytes)
        self.request_timeout = float(request_timeout)
        self.request_timer: asyncio.TimerHandle | None = None
        # uvicorn's own check would answer in plain text: count connections here instead
        self.max_connections = self.limit_concurrency
        self.limit_concurrency = None
        self._app = self.app
        self.app = self._limited_app

    # -- timeouts ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # a request head is arriving
            if self.request_timer is None:
                self.request_timer = self.loop.call_later(self.request_timeout, self._timed_out)
            limit = self.max_head_bytes
            head = self.conn.trailing_data[0][:limit + 4] + data[:limit + 4]
            end = head.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(head)) > limit:
                self._refuse(431, "header_too_large", f"the request head is larger than the "
                                                      f"limit of {limit // 1024} KiB")
                return
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.request_timer is not None and self.conn.their_state in _DONE:
            self._cancel_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def _cancel_request_timer(self) -> None:
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def _timed_out(self) -> None:
        """The request did not arrive in time: 408 if no response has begun, then close."""
        self.request_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self.conn.their_state is not h11.IDLE else None
        if cycle is None or not cycle.response_started:
            if cycle is not None:  # the app stops waiting for the body: a disconnect
                cycle.response_started = cycle.disconnected = True
                cycle.message_event.set()
            self.transport.write(_raw_response(
                408, "request_timeout", f"the request was not received in full within "
                                        f"{self.request_timeout:g} s"))
        log.info("closed a connection whose request took over %g s", self.request_timeout)
        self.transport.close()

    # -- errors as JSON ---------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        exc = self.conn.error
        status = getattr(exc, "error_status_hint", 400) if exc else 400
        reason = str(exc) if exc and str(exc) else msg
        if status == 431:
            code, detail = "header_too_large", ("the request head is larger than the limit of "
                                                f"{self.max_head_bytes // 1024} KiB")
        elif "content-length" in reason.lower():
            code, detail = "bad_content_length", f"invalid HTTP request ({reason})"
        else:
            code, detail = ("bad_http_request" if status == 400 else "not_implemented",
                            f"invalid HTTP request ({reason})")
        self._refuse(status if status in STATUS_PHRASES else 400, code, detail)

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer with the JSON error and close the connection."""
        self._cancel_request_timer()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, code, detail))
            self.transport.close()

    async def _limited_app(self, scope: dict, receive: Any, send: Any) -> None:
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            body = error_body("too_many_connections", f"the server has {self.max_connections} "
                                                      f"open connections, its limit; retry in "
                                                      f"a moment")
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                (b"retry-after", b"%d" % RETRY_AFTER_S), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)

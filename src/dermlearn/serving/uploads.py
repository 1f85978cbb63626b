"""Reading an uploaded image: in memory only, size-limited while streaming, never logged.

Starlette's form parser spools file parts over 1 MB to a temporary file on disk; a medical
photo must not touch the disk unless the operator asked for it (``--keep-uploads``), so the
multipart body is parsed here with python-multipart's streaming parser into memory, and the
request is refused (413) as soon as it exceeds the byte limit, before it is read in full.

The parser runs on the event loop, so it is fed at most :data:`SLICE_BYTES` at a time and
yields to other requests whenever it has held the loop for :data:`YIELD_AFTER_S`; it stops at
the first part over ``max_parts`` (413 ``too_many_parts``: a body of 380,000 empty parts is
refused after its first few kilobytes, not parsed for seconds). A body refused part-way is read
to its end without parsing (at most the upload limit, for at most :data:`DRAIN_S`) so that the
client reads the answer rather than a reset connection, and the connection is then closed.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["DEFAULT_MAX_PARTS", "Upload", "UploadError", "read_multipart_file", "save_upload",
           "sniff_extension"]

#: Room for the multipart framing (boundaries, part headers, small extra fields).
MULTIPART_OVERHEAD = 64 * 1024
#: Most parts in one upload by default (the photo and three optional text fields, and room).
DEFAULT_MAX_PARTS = 16
#: The parser is fed at most this many bytes at a time ...
SLICE_BYTES = 64 * 1024
#: ... and yields the event loop once it has held it this long (seconds).
YIELD_AFTER_S = 0.002
#: Longest a refused body is read on (and discarded) before the answer (seconds).
DRAIN_S = 2.0


class UploadError(Exception):
    """A request the service refuses: HTTP ``status``, a machine-readable ``code``, a message
    for people, extra response ``headers``, and ``close``: whether the connection must be
    closed after the answer (the body was not read to its end)."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.close = close


#: Longest accepted text field (bytes), e.g. ``site``.
MAX_FIELD_BYTES = 200


@dataclass
class Upload:
    """The file part of a multipart request (bytes in memory) and the text fields asked for."""

    data: bytes
    filename: str | None
    content_type: str | None
    fields: dict[str, str] = dataclass_field(default_factory=dict)


def _too_large(limit: int) -> UploadError:
    return UploadError(413, "upload_too_large",
                       f"upload larger than the limit of {limit / 2**20:g} MB", close=True)


async def _drain(body: AsyncIterator[bytes], budget: int) -> bool:
    """Read ``body`` to its end without keeping it, at most ``budget`` bytes and
    :data:`DRAIN_S` seconds; whether the end was reached."""
    deadline = time.monotonic() + DRAIN_S
    try:
        async for chunk in body:
            budget -= len(chunk)
            if budget < 0 or time.monotonic() > deadline:
                return False
    except Exception:  # noqa: BLE001 - a disconnect: nothing more to read
        return False
    return True


async def read_multipart_file(content_type: str | None, content_length: str | None,
                              body: AsyncIterator[bytes], *, field: str = "image",
                              text_fields: Sequence[str] = (), max_bytes: int,
                              max_parts: int = DEFAULT_MAX_PARTS) -> Upload:
    """The ``field`` file of a ``multipart/form-data`` body, read into memory, and the
    ``text_fields`` that were sent (UTF-8, stripped; other parts are ignored).

    Raises :class:`UploadError`: 415 when the body is not multipart, 413 when it (or the file)
    exceeds ``max_bytes`` (checked against Content-Length first, then while streaming) or it
    has more than ``max_parts`` parts, 400 for a malformed body, 422 when the file is missing
    or empty or a text field is not short UTF-8 text.
    """
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise UploadError(415, "not_multipart",
                          f"send the image as multipart/form-data with a file field "
                          f"'{field}' (got Content-Type {content_type or 'none'!r})")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise UploadError(400, "malformed_multipart", "multipart body without a valid boundary")
    limit = max_bytes + MULTIPART_OVERHEAD
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadError(400, "bad_content_length", "invalid Content-Length") from None
        if declared > limit:
            raise _too_large(max_bytes)

    parts: list[dict] = []
    current: dict = {}
    header_field = bytearray()
    header_value = bytearray()
    state = {"bytes": 0}

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise UploadError(413, "too_many_parts", f"the form has more than {max_parts} "
                                                     f"parts (send the photo as '{field}' and "
                                                     f"at most the optional text fields)")
        current.clear()
        current.update(headers={}, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].extend(data[start:end])
        if len(current["data"]) > max_bytes:
            raise _too_large(max_bytes)

    def on_part_end() -> None:
        parts.append(dict(current))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end}, max_header_count=16)
    held = time.perf_counter()
    try:
        async for chunk in body:
            state["bytes"] += len(chunk)
            if state["bytes"] > limit:
                raise _too_large(max_bytes)
            for start in range(0, len(chunk), SLICE_BYTES):
                parser.write(chunk if len(chunk) <= SLICE_BYTES
                             else chunk[start:start + SLICE_BYTES])
                if time.perf_counter() - held > YIELD_AFTER_S:
                    await asyncio.sleep(0)  # let other requests (and probes) run
                    held = time.perf_counter()
        parser.finalize()
    except (MultipartParseError, UploadError) as exc:
        error = exc if isinstance(exc, UploadError) else UploadError(
            400, "malformed_multipart", f"malformed multipart body ({exc})")
        if not error.close:  # refused part-way: read the rest, unparsed, then close
            error.close = True
            await _drain(body, limit - state["bytes"])
        raise error from None

    upload: Upload | None = None
    texts: dict[str, str] = {}
    for part in parts:
        disposition = part["headers"].get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name in text_fields:
            texts[name] = _text_field(name, bytes(part["data"]))
        if name != field or upload is not None:
            continue
        data = bytes(part["data"])
        if not data:
            raise UploadError(422, "empty_upload", f"the '{field}' file is empty (0 bytes)")
        filename = options.get(b"filename")
        ctype = part["headers"].get(b"content-type")
        upload = Upload(data, filename.decode("utf-8", "replace") if filename else None,
                        ctype.decode("latin-1") if ctype else None)
    if upload is None:
        raise UploadError(422, "missing_file",
                          f"no file field '{field}' in the form (send it as multipart/form-data "
                          f"with the photo in a field named '{field}')")
    upload.fields = texts
    return upload


def _text_field(name: str, data: bytes) -> str:
    if len(data) > MAX_FIELD_BYTES:
        raise UploadError(422, "bad_field", f"form field '{name}' is longer than "
                                            f"{MAX_FIELD_BYTES} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UploadError(422, "bad_field", f"form field '{name}' is not UTF-8 text") from None


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"II*\x00", "tif"),
          (b"MM\x00*", "tif"), (b"BM", "bmp"), (b"GIF8", "gif"))


def sniff_extension(data: bytes) -> str:
    """A file extension from the content's magic bytes (``bin`` when unknown)."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


def save_upload(directory: str | Path, data: bytes) -> Path:
    """Write an upload into ``directory`` (``--keep-uploads``) as
    ``UTCTIME-SHA256PREFIX.EXT``, readable by the service's user only. The client's file name
    is not used (it may hold a patient's name)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{stamp}-{digest}.{sniff_extension(data)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path

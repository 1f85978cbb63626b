"""Fetching one file over HTTP: resume with ``Range``, size and checksum checks, a progress bar.

Data is streamed to ``FILE.part`` and renamed to ``FILE`` only once complete and verified; a
dropped connection keeps the ``.part`` so that a re-run resumes, a checksum mismatch deletes it.
The dataset registry that uses this is :mod:`dermlearn.data.download`.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError

from tqdm import tqdm

from dermlearn.errors import DownloadError

__all__ = ["USER_AGENT", "download_file"]

USER_AGENT = "dermlearn-download/1 (Python urllib)"


def download_file(url: str, dest_path: str | os.PathLike, *, sha256: str | None = None,
                  expected_size: int | None = None, progress: bool = True,
                  chunk_size: int = 1 << 20, timeout: float = 60,
                  md5: str | None = None) -> Path:
    """Download ``url`` to ``dest_path``, resuming a previous partial download.

    Data is streamed to ``dest_path.part``; an existing ``.part`` is resumed with an HTTP
    ``Range`` request. Once complete, the size and checksums (when given) are verified and the
    file is renamed to ``dest_path``. A ``dest_path`` that already exists and is complete (its
    size matches ``expected_size`` or the server's ``Content-Length``, and its checksum matches
    when one is given) is kept without downloading it again.

    Raises :class:`DownloadError` on HTTP errors, timeouts and dropped connections (the
    ``.part`` file is kept so that a re-run resumes) and on a checksum mismatch (the corrupt file
    is deleted).
    """
    dest = Path(dest_path).expanduser()
    if dest.is_file() and _check_existing(url, dest, sha256=sha256, md5=md5,
                                          expected_size=expected_size, timeout=timeout)[0]:
        return dest
    _fetch(url, dest, sha256=sha256, md5=md5, expected_size=expected_size, progress=progress,
           chunk_size=chunk_size, timeout=timeout)
    return dest


def _fetch(url: str, dest: Path, *, sha256: str | None, md5: str | None,
           expected_size: int | None, progress: bool, chunk_size: int, timeout: float,
           _retry: bool = True) -> str:
    """Download to ``dest`` via ``dest.part``; return the SHA-256 of the result."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                total = _content_range(exc.headers.get("Content-Range"))[2]
                if total is None or total == offset:  # the .part already holds everything
                    return _finalize(part, dest, url, _hash_file(part, with_md5=md5 is not None),
                                     sha256=sha256, md5=md5, expected_size=expected_size)
                part.unlink()  # larger than the remote file: not a prefix of it
                if _retry:
                    return _fetch(url, dest, sha256=sha256, md5=md5, expected_size=expected_size,
                                  progress=progress, chunk_size=chunk_size, timeout=timeout,
                                  _retry=False)
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (URLError, OSError, HTTPException, ValueError) as exc:
        raise DownloadError(f"{url}: {_reason(exc)}"
                            + ("; re-run to resume" if offset else "")) from None

    with response:
        if response.status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start is not None and start != offset:
                raise DownloadError(f"{url}: asked to resume at byte {offset}, the server sent "
                                    f"data from byte {start}; {part} kept, re-run to retry")
        else:  # 200: the server ignored (or was not sent) the Range header: start over
            offset = 0
            total = _int_or_none(response.headers.get("Content-Length"))
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url}: the server reports {total:,} bytes, expected "
                                f"{expected_size:,}; is this the right file (or mirror)?")
        hashers = _hashers(md5 is not None)
        if offset:
            _update_from_file(hashers, part)
        received = offset
        try:
            with open(part, "ab" if offset else "wb") as fh, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=dest.name, disable=not progress, dynamic_ncols=True) as bar:
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (OSError, HTTPException) as exc:
                        raise DownloadError(
                            f"{url}: connection lost after {received:,} bytes ({_reason(exc)}); "
                            f"{part.name} kept, re-run to resume") from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except OSError as exc:
            raise DownloadError(f"{part}: cannot write ({exc.strerror or exc})") from None
    if total is not None and received < total:
        raise DownloadError(f"{url}: connection closed after {received:,} of {total:,} bytes; "
                            f"{part.name} kept, re-run to resume")
    return _finalize(part, dest, url, hashers, sha256=sha256, md5=md5,
                     expected_size=expected_size)


def _finalize(part: Path, dest: Path, url: str, hashers: dict, *, sha256: str | None,
              md5: str | None, expected_size: int | None) -> str:
    """Check size and checksums of ``part``; rename it to ``dest`` or delete it and raise."""
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"{dest.name}: downloaded {size:,} bytes, expected {expected_size:,} "
                            f"(from {url}); the file was deleted, re-run to download it again")
    actual = hashers["sha256"].hexdigest()
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and hashers[algo].hexdigest() != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{dest.name}: {algo.upper()} mismatch (from {url}): expected {expected.lower()}, "
                f"got {hashers[algo].hexdigest()}; the corrupt file was deleted, re-run to "
                f"download it again")
    os.replace(part, dest)
    return actual


def _check_existing(url: str, dest: Path, *, sha256: str | None, md5: str | None,
                    expected_size: int | None, timeout: float) -> tuple[bool, str | None]:
    """Whether an existing ``dest`` is the complete file (a corrupt one is deleted), and its
    SHA-256 when that had to be computed.

    Complete means: the size matches ``expected_size`` (or, with no size and no checksum known,
    the server's ``Content-Length`` from a HEAD request, when it gives one) and the checksums
    match when known.
    """
    size = dest.stat().st_size
    reference = expected_size
    if reference is None and sha256 is None and md5 is None:  # a checksum makes this moot
        reference = _remote_size(url, timeout)
    if reference is not None and size != reference:
        dest.unlink()
        return False, None
    if sha256 is None and md5 is None:
        return True, None
    hashers = _hash_file(dest, with_md5=md5 is not None)
    if ((sha256 is not None and hashers["sha256"].hexdigest() != sha256.lower())
            or (md5 is not None and hashers["md5"].hexdigest() != md5.lower())):
        dest.unlink()
        return False, None
    return True, hashers["sha256"].hexdigest()


def _remote_size(url: str, timeout: float) -> int | None:
    """``Content-Length`` from a HEAD request, or ``None`` if the server does not say."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _int_or_none(response.headers.get("Content-Length"))
    except (URLError, OSError, HTTPException, ValueError):
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) into ints (``None`` if absent)."""
    if not value or not value.strip().lower().startswith("bytes"):
        return None, None, None
    spec, _, total = value.strip()[5:].strip().partition("/")
    start, _, end = spec.partition("-")
    return _int_or_none(start), _int_or_none(end), _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip()
    return text or type(reason).__name__


def _hashers(with_md5: bool) -> dict:
    hashers = {"sha256": hashlib.sha256()}
    if with_md5:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    return hashers


def _update_from_file(hashers: dict, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            for h in hashers.values():
                h.update(block)


def _hash_file(path: Path, with_md5: bool = False) -> dict:
    hashers = _hashers(with_md5)
    _update_from_file(hashers, path)
    return hashers

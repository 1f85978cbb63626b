"""Access control: an optional bearer token for ``/v1/*`` and ``/metrics``.

The token comes from a file (``--token-file``, first line, surrounding whitespace stripped) or
the ``DERMLEARN_TOKEN`` environment variable; without one the service is open, which
``dermlearn serve`` allows only on a loopback address (or with ``--insecure``).

>>> token = resolve_token("/etc/dermlearn/token")      # or None: DERMLEARN_TOKEN, else open
>>> authorized(b"Bearer s3cret", token)
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from pathlib import Path

from dermlearn.errors import DermlearnError

__all__ = ["ENV_TOKEN", "MIN_TOKEN_CHARS", "authorized", "is_loopback", "resolve_token"]

#: Environment variable holding the token when no token file is given.
ENV_TOKEN = "DERMLEARN_TOKEN"
#: Shortest accepted token (characters): a guessable token is no access control.
MIN_TOKEN_CHARS = 16


def resolve_token(token_file: str | os.PathLike | None = None) -> str | None:
    """The bearer token: the first line of ``token_file`` when given, else ``$DERMLEARN_TOKEN``,
    else None (no access control). A :class:`DermlearnError` for an unreadable or empty file,
    or a token shorter than :data:`MIN_TOKEN_CHARS` characters or with spaces."""
    if token_file:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DermlearnError(f"--token-file {path}: cannot read it ({exc})") from None
        where = f"--token-file {path}"
        token = (text.strip().splitlines() or [""])[0].strip()
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            import logging

            logging.getLogger("dermlearn.serving").warning(
                "%s is readable by other users: chmod 600 it", where)
    else:
        token = os.environ.get(ENV_TOKEN, "").strip()
        where = ENV_TOKEN
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise DermlearnError(f"{where}: the token must be at least {MIN_TOKEN_CHARS} characters "
                             f"without spaces (e.g. `python -c 'import secrets; "
                             f"print(secrets.token_urlsafe(32))'`)")
    return token


def authorized(header: bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token (compared
    in constant time)."""
    if not header:
        return False
    scheme, _, given = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False

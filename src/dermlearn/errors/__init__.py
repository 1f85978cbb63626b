"""Exceptions raised by dermlearn.

Every error a user can cause derives from :class:`DermlearnError`; the CLI prints its
message (which names the offending file, row or value) and exits non-zero without a
traceback.
"""
from __future__ import annotations


class DermlearnError(Exception):
    """Base class for user-facing errors."""


class ImageDecodeError(DermlearnError):
    """An image file cannot be decoded safely (corrupt, truncated, not an image, too large)."""

    def __init__(self, path: object, reason: str | None = None):
        if reason is None:
            # Re-raised from a DataLoader worker as ImageDecodeError(text): the text wraps the
            # worker's traceback; its last line is the original "path: reason".
            last = [line for line in str(path).splitlines() if line.strip()][-1]
            last = last.split(f"{type(self).__name__}: ", 1)[-1]
            path, _, reason = last.partition(": ")
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(DermlearnError):
    """A dataset failed validation; ``problems`` lists every issue found, not just the first.

    The message lists the problems, or ``summary`` (lines written for a person, e.g. a count
    and a few examples per kind) in their place when given."""

    def __init__(self, message: str, problems: list | None = None,
                 summary: list[str] | None = None):
        self.problems = list(problems or [])
        if summary is not None:
            lines = [message] + [f"  - {line}" if not line.startswith(" ") else f"  {line}"
                                 for line in summary]
        else:
            lines = [message] + [f"  - {p}" for p in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f"  ... and {len(self.problems) - 50} more")
        super().__init__("\n".join(lines))


class TaxonomyError(DermlearnError):
    """A taxonomy file is malformed, or a label/level does not fit the taxonomy."""


class LeakageError(DermlearnError):
    """One lesion (or patient) appears in more than one split part."""


class DownloadError(DermlearnError):
    """A dataset download failed (network, HTTP status, checksum)."""

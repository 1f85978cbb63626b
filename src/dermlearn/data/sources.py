"""Where images come from: plain files, members of a ``.zip`` archive read in place, and what is
not an image source at all (a URL).

An image inside a zip archive is named by the archive's path followed by the member's name:
``/data/photos.zip/nv/x.jpg`` is the member ``nv/x.jpg`` of ``/data/photos.zip``. Such a path
works wherever dermlearn takes an image path: :func:`~dermlearn.data.images.read_image`
decodes it straight from the archive (nothing is extracted to disk), :func:`image_exists`
and :func:`stat_image` stand in for ``Path.is_file()`` and ``Path.stat()``.

Archives are opened lazily, once per process (a DataLoader worker forked from a process that
had the archive open opens its own copy: a shared file offset would mix up their reads).
Members named with an absolute path or ``..`` (zip-slip) are refused, and so is any member
whose uncompressed size, as the archive's directory states it, exceeds
:data:`MAX_MEMBER_BYTES` (zip bombs); reading never produces more than that stated size.
"""
from __future__ import annotations

import os
import re
import stat
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

from dermlearn.errors import DataError, ImageDecodeError

__all__ = ["MAX_MEMBER_BYTES", "ArchiveListing", "SourceStat", "image_exists", "is_ignored",
           "is_url", "is_zip_archive", "list_archive", "member_path", "read_member",
           "refuse_url", "split_member_path", "stat_image", "walk_files"]

#: Largest uncompressed size of one zip member that is read (checked from the archive's
#: directory before reading): 256 MiB holds a 64-megapixel 8-bit RGB image uncompressed.
MAX_MEMBER_BYTES = 256 * 2**20
#: Archives kept open per process.
MAX_OPEN_ARCHIVES = 8
#: File and folder names that are never data: OS bookkeeping, ignored without a word.
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "Desktop.ini"})

_ZIP_SUFFIX = re.compile(r"\.zip(?=[/\\])", re.IGNORECASE)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
# what pathlib leaves of a URL: Path("https://x.org/a.jpg") prints "https:/x.org/a.jpg"
_COLLAPSED_URL = re.compile(r"^(https?|ftps?|sftp|s3|gs|az|abfss?|hf|file):/(?!/)", re.IGNORECASE)


# --------------------------------------------------------------------------- URLs


def is_url(text: str | os.PathLike) -> bool:
    """Whether ``text`` is a URL (``https://...``, ``s3://...``), also as pathlib prints one
    after collapsing its ``//`` (``https:/host/x.jpg``)."""
    text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return bool(_URL.match(text) or _COLLAPSED_URL.match(text))


def refuse_url(text: str | os.PathLike) -> None:
    """Raise :class:`~dermlearn.errors.DataError` when ``text`` is a URL: dermlearn reads
    local files only; the message says to download it first."""
    if is_url(text):
        text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
        text = _COLLAPSED_URL.sub(lambda m: f"{m.group(1)}://", text)
        raise DataError(f"{text}: a URL; dermlearn reads local files and folders only: download "
                        f"it first (e.g. `curl -LO {text}`, or `dermlearn data download` for a "
                        f"known public dataset) and give the downloaded file's path")


# --------------------------------------------------------------------------- walking folders


def is_ignored(parts: Iterable[str]) -> bool:
    """Whether a relative path (its parts) is hidden (``.DS_Store``, ``.git/...``) or OS
    bookkeeping (``__MACOSX/...``, ``Thumbs.db``): never data, skipped without a word."""
    return any(part.startswith(".") or part in JUNK_NAMES for part in parts)


def walk_files(root: str | os.PathLike, *, exclude_dirs: Iterable[str] = (),
               skip_hidden: bool = False) -> Iterator[Path]:
    """Every file below ``root`` (names sorted within each folder), following symbolic links
    to folders, each real folder visited once (a link loop, or two links to one folder, is
    not walked twice). Folders named in ``exclude_dirs`` are not entered; with
    ``skip_hidden``, neither are hidden or bookkeeping folders (see :func:`is_ignored`), and
    such files are not yielded. Broken links and other non-regular entries are yielded as
    they are: callers check ``is_file()``.
    """
    root = Path(root)
    exclude = set(exclude_dirs)
    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(dirs):
            if name in exclude or (skip_hidden and is_ignored([name])):
                continue
            real = os.path.realpath(os.path.join(folder, name))
            if real in seen:
                continue
            seen.add(real)
            kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if not (skip_hidden and is_ignored([name])):
                yield Path(folder, name)


# --------------------------------------------------------------------------- zip archives


def is_zip_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an existing file named ``*.zip`` (any case)."""
    text = os.fspath(path)
    return text.lower().endswith(".zip") and os.path.isfile(text)


def member_path(archive: str | os.PathLike, member: str) -> str:
    """The path string naming ``member`` of ``archive``: ``/abs/photos.zip/nv/x.jpg``."""
    return os.path.join(os.path.abspath(archive), *PurePosixPath(member).parts)


def split_member_path(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(archive, member)`` when ``path`` names a member of an existing ``.zip`` file (see
    the module docstring), else None. The member name uses ``/``; it is not checked here."""
    text = os.fspath(path)
    for match in _ZIP_SUFFIX.finditer(text):
        archive = text[:match.end()]
        if os.path.isfile(archive):
            member = text[match.end():].replace("\\", "/").strip("/")
            return (archive, member) if member else None
    return None


def unsafe_member_reason(name: str) -> str | None:
    """Why a zip member name is refused (absolute path, drive letter, ``..``), or None."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or posix.is_absolute():
        return "an absolute path"
    if ".." in posix.parts:
        return "'..' in its path"
    return None


def _normal(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).as_posix().strip("/")


class _Archive(NamedTuple):
    signature: tuple[int, int, int]
    zip: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]  # normalised name -> entry (directories left out)


class _Archives:
    """Open archives of this process (at most :data:`MAX_OPEN_ARCHIVES`, least recently used
    dropped first)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.open: OrderedDict[str, _Archive] = OrderedDict()

    def get(self, archive: str) -> _Archive:
        real = os.path.realpath(archive)
        st = os.stat(real)  # FileNotFoundError for callers to word
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self.lock:
            entry = self.open.get(real)
            if entry is not None and entry.signature == signature:
                self.open.move_to_end(real)
                return entry
            if entry is not None:  # the archive changed on disk
                del self.open[real]
        handle = zipfile.ZipFile(real)
        members: dict[str, zipfile.ZipInfo] = {}
        for info in handle.infolist():
            if not info.is_dir():
                members.setdefault(_normal(info.filename), info)
        entry = _Archive(signature, handle, members)
        with self.lock:
            self.open[real] = entry
            while len(self.open) > MAX_OPEN_ARCHIVES:
                # dropped, not closed: another thread may be reading from it; the file is
                # closed when the last reference goes
                self.open.popitem(last=False)
        return entry


_ARCHIVES = _Archives()


def _reset_after_fork() -> None:
    # The parent's ZipFile objects share its file offsets: never read through them here.
    global _ARCHIVES
    _ARCHIVES = _Archives()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _archives() -> _Archives:
    if _ARCHIVES.pid != os.getpid():  # forked without the hook (should not happen)
        _reset_after_fork()
    return _ARCHIVES


def _open_archive(archive: str, error: type[Exception], name: str) -> _Archive:
    try:
        return _archives().get(archive)
    except FileNotFoundError:
        raise _error(error, name, "file not found") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        what = "not a readable zip archive" if name == archive else \
            f"cannot read the zip archive {archive}"
        raise _error(error, name, f"{what} ({exc})") from None


def _error(error: type[Exception], name: str, reason: str) -> Exception:
    return ImageDecodeError(name, reason) if error is ImageDecodeError else \
        error(f"{name}: {reason}")


class ArchiveListing(NamedTuple):
    """The file members of an archive: ``names`` (normalised, ``/``-separated, in the
    archive's order) and ``paths`` (each member's path string, see :func:`member_path`)."""

    archive: str
    names: list[str]
    paths: list[str]


def list_archive(archive: str | os.PathLike) -> ArchiveListing:
    """The file members of a zip ``archive`` (folders left out). Raises DataError for an
    archive that cannot be read or that names a member with an absolute path or ``..``
    (zip-slip): such an archive is refused whole."""
    archive = os.path.abspath(archive)
    entry = _open_archive(archive, DataError, archive)
    for info in entry.zip.infolist():
        reason = unsafe_member_reason(info.filename)
        if reason is not None:
            raise DataError(f"{archive}: member {info.filename!r} is named with {reason} "
                            f"(zip-slip); refusing the archive")
    names = list(entry.members)
    return ArchiveListing(archive, names, [member_path(archive, n) for n in names])


def _member(path: str | os.PathLike, error: type[Exception]) -> tuple[_Archive, zipfile.ZipInfo]:
    name = os.fspath(path)
    split = split_member_path(name)
    if split is None:
        raise _error(error, name, "file not found")
    archive, member = split
    reason = unsafe_member_reason(member)
    if reason is not None:
        raise _error(error, name, f"zip member named with {reason} (zip-slip) refused")
    entry = _open_archive(archive, error, name)
    info = entry.members.get(_normal(member))
    if info is None:
        raise _error(error, name, f"file not found (no member {member!r} in {archive})")
    return entry, info


def read_member(path: str | os.PathLike, *, max_bytes: int | None = None) -> bytes:
    """The uncompressed bytes of the zip member named by ``path`` (see the module docstring).

    Raises ImageDecodeError naming ``path`` when the archive or member is missing, the member
    name is unsafe, the member is a symbolic link, its stated uncompressed size exceeds
    ``max_bytes`` (default :data:`MAX_MEMBER_BYTES`; checked before reading), or its data is
    corrupt (CRC mismatch, unsupported compression, encrypted).
    """
    name = os.fspath(path)
    entry, info = _member(name, ImageDecodeError)
    limit = MAX_MEMBER_BYTES if max_bytes is None else max_bytes
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ImageDecodeError(name, "zip member is a symbolic link; not followed")
    if info.file_size > limit:
        raise ImageDecodeError(name, f"zip member too large: {info.file_size:,} bytes "
                                     f"uncompressed > limit {limit:,} (zip bomb refused)")
    try:
        with entry.zip.open(info) as member:  # never yields more than info.file_size
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        raise ImageDecodeError(name, f"corrupt zip member ({exc})") from None
    if len(data) > limit:
        raise ImageDecodeError(name, "zip member larger than its stated size "
                                     "(zip bomb refused)")
    return data


# --------------------------------------------------------------------------- any image path


def image_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an existing regular file or a file member of an existing zip
    archive (``/abs/photos.zip/nv/x.jpg``): what ``Path(path).is_file()`` answers for files."""
    text = os.fspath(path)
    if os.path.isfile(text):
        return True
    try:
        _member(text, FileNotFoundError)
    except FileNotFoundError:
        return False
    return True


class SourceStat(NamedTuple):
    """What the image caches key on: size in bytes and modification time (ns)."""

    st_size: int
    st_mtime_ns: int


def stat_image(path: str | os.PathLike) -> SourceStat:
    """Size and modification time of an image file, or of a zip member (its uncompressed
    size; the archive's modification time, so that rewriting the archive invalidates
    caches). Raises FileNotFoundError when neither exists, like ``os.stat``."""
    text = os.fspath(path)
    try:
        st = os.stat(text)
    except (FileNotFoundError, NotADirectoryError):
        entry, info = _member(text, FileNotFoundError)
        archive_st = os.stat(entry.zip.filename)
        return SourceStat(info.file_size, archive_st.st_mtime_ns)
    return SourceStat(st.st_size, st.st_mtime_ns)

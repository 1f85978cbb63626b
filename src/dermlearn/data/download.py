"""Download public skin-lesion datasets from their official locations.

``dermlearn data download NAME DEST`` fetches every file of a dataset with resume (HTTP
``Range``), checksum verification and a progress bar, extracts the archives safely and lays the
result out the way the matching reader in :mod:`dermlearn.data.readers` expects it::

    >>> from dermlearn.data.download import download_dataset
    >>> download_dataset("isic2019", "~/data/isic2019")          # doctest: +SKIP

Files are streamed to ``FILE.part`` and renamed only once complete and verified, so an
interrupted run resumes where it stopped when started again, and a file already present and
complete is not downloaded twice. The SHA-256 of every downloaded file is written to
``DEST/SHA256SUMS`` (``sha256sum -c SHA256SUMS`` re-checks them).

Institutional mirrors: pass ``mirror="https://host/path"`` (or set ``DERMLEARN_DOWNLOAD_MIRROR``)
and each file is fetched from ``<mirror>/<filename>`` instead; checksums still apply.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.error import HTTPError, URLError

from tqdm import tqdm

from dermlearn.errors import DownloadError

__all__ = ["MIRROR_ENV", "SOURCES", "DatasetSource", "RemoteFile", "describe",
           "download_dataset", "download_file", "extract_archive", "mirror_url"]

#: Environment variable naming a mirror used when ``download_dataset(mirror=None)``.
MIRROR_ENV = "DERMLEARN_DOWNLOAD_MIRROR"
#: File (in DEST) listing the SHA-256 of every downloaded file, in ``sha256sum`` format.
SUMS_FILE = "SHA256SUMS"
#: Hidden folder (in DEST) holding the "archive already extracted" stamps.
STATE_DIR = ".dermlearn-download"
USER_AGENT = "dermlearn-download/1 (Python urllib)"
#: External RAR extractors, in order of preference, with their command lines.
RAR_TOOLS: tuple[tuple[str, Callable[[str, Path, Path], list[str]]], ...] = (
    ("unar", lambda exe, archive, out: [exe, "-quiet", "-force-overwrite", "-no-directory",
                                        "-output-directory", str(out), str(archive)]),
    ("unrar", lambda exe, archive, out: [exe, "x", "-o+", "-y", "-idq", str(archive),
                                         f"{out}{os.sep}"]),
    ("7z", lambda exe, archive, out: [exe, "x", "-y", "-bd", f"-o{out}", str(archive)]),
    ("bsdtar", lambda exe, archive, out: [exe, "-x", "-f", str(archive), "-C", str(out)]),
)
_RAR_INSTALL_HINT = (
    "install one of them and re-run the same command (the download is not repeated): "
    "Debian/Ubuntu `apt install unar` (or `unrar`, `p7zip-full`, `libarchive-tools` for bsdtar), "
    "Fedora `dnf install unar`, macOS `brew install unar`, conda `conda install -c conda-forge "
    "libarchive` (bsdtar), Windows 7-Zip (https://www.7-zip.org)"
)
_JUNK = ("__MACOSX/", ".DS_Store")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives, its name in DEST and what is known to verify it.

    ``sha256``/``md5`` are the publisher's checksums where one is published (``None``: none is;
    the SHA-256 of what was downloaded is then recorded in ``DEST/SHA256SUMS``). ``extract``
    marks an archive to unpack into ``DEST/<stem>/``.
    """

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = False
    md5: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A downloadable dataset: what it is, its terms, its files and its layout fix-up step.

    ``prepare(dest)`` runs after all files are downloaded and archives extracted; it moves files
    into the layout the reader expects and raises :class:`DownloadError` if something is missing.
    """

    name: str
    description: str
    homepage: str
    license: str
    files: tuple[RemoteFile, ...]
    prepare: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)
    citation: str = ""


# --------------------------------------------------------------------------------------------
# Single-file download
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------

def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, *,
                    folder: str | None = None, progress: bool = True) -> Path:
    """Extract ``archive`` (zip or rar) so that its contents end up in ``dest/folder``.

    ``folder`` defaults to the archive's stem. An archive whose members all sit under a
    top-level ``folder/`` is extracted into ``dest``; any other is extracted into
    ``dest/folder``. Zip members with absolute paths or ``..`` are refused (zip-slip) before
    anything is written. RAR archives need an external tool (see :data:`RAR_TOOLS`). Returns
    ``dest/folder``.
    """
    archive, dest = Path(archive), Path(dest)
    folder = folder or archive.name.rsplit(".", 1)[0]
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix.lower() == ".rar":
        _extract_rar(archive, dest, folder)
    else:
        _extract_zip(archive, dest, folder, progress)
    return dest / folder


def _extract_zip(archive: Path, dest: Path, folder: str, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not _is_junk(m.filename)]
            for member in members:
                _check_member(archive, member)
            nested = all(PurePosixPath(m.filename.replace("\\", "/")).parts[0] == folder
                         for m in members) and bool(members)
            target = dest if nested else dest / folder
            for member in tqdm(members, desc=f"extracting {archive.name}", unit="file",
                               disable=not progress, dynamic_ncols=True):
                zf.extract(member, target)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(f"{archive}: not a readable zip archive ({exc}); delete it and "
                            f"re-run to download it again") from None
    except OSError as exc:
        raise DownloadError(f"{archive}: extraction into {dest} failed: {exc}") from None


def _is_junk(name: str) -> bool:
    return name.startswith(_JUNK[0]) or PurePosixPath(name).name == _JUNK[1]


def _check_member(archive: Path, member: zipfile.ZipInfo) -> None:
    """Refuse members that would be written outside the extraction folder, and symlinks."""
    name = member.filename
    posix = PurePosixPath(name.replace("\\", "/"))
    if (name.startswith(("/", "\\")) or PureWindowsPath(name).drive or posix.is_absolute()
            or ".." in posix.parts):
        raise DownloadError(f"{archive}: refusing to extract member {name!r} (absolute path or "
                            f"'..' would write outside the destination); the archive is unsafe")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DownloadError(f"{archive}: refusing to extract symbolic link member {name!r}")


def _extract_rar(archive: Path, dest: Path, folder: str) -> None:
    tools = [(name, exe, command) for name, command in RAR_TOOLS
             if (exe := shutil.which(name)) is not None]
    if not tools:
        raise DownloadError(
            f"{archive.name} is a RAR archive and no extractor was found on PATH (looked for "
            f"{', '.join(name for name, _ in RAR_TOOLS)}). The archive is kept at {archive}; "
            + _RAR_INSTALL_HINT)
    scratch = dest / f".{folder}.extracting"
    failures = []
    for name, exe, command in tools:
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        try:
            result = subprocess.run(command(exe, archive.resolve(), scratch.resolve()),
                                    capture_output=True, text=True, check=False)
        except OSError as exc:
            failures.append(f"{name}: {exc}")
            continue
        if result.returncode == 0:
            break
        detail = (result.stderr or result.stdout).strip().splitlines()
        failures.append(f"{name} exited with {result.returncode}"
                        + (f": {detail[-1]}" if detail else ""))
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        raise DownloadError(f"{archive}: extraction failed ({'; '.join(failures)}); the archive "
                            f"is kept; extract it by hand into {dest}")
    for path in scratch.rglob("*"):
        if path.is_symlink():
            shutil.rmtree(scratch, ignore_errors=True)
            raise DownloadError(f"{archive}: contains a symbolic link "
                                f"({path.relative_to(scratch)}); refusing to extract it")
    entries = list(scratch.iterdir())
    source = entries[0] if len(entries) == 1 and entries[0].is_dir() \
        and entries[0].name == folder else scratch
    _merge_move(source, dest / folder)
    shutil.rmtree(scratch, ignore_errors=True)


def _merge_move(src: Path, dst: Path) -> None:
    """Move the contents of ``src`` into ``dst`` (merging folders, replacing files)."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in list(src.iterdir()):
        target = dst / item.name
        if item.is_dir() and target.is_dir():
            _merge_move(item, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    src.rmdir()


# --------------------------------------------------------------------------------------------
# Per-dataset layout fix-ups
# --------------------------------------------------------------------------------------------

def _require(dest: Path, name: str, paths: list[str]) -> None:
    missing = [p for p in paths if not (dest / p).exists()]
    if missing:
        raise DownloadError(f"{name}: after download and extraction {dest} lacks {missing}; "
                            f"delete {dest / STATE_DIR} and re-run to extract again")


def _prepare_ham10000(dest: Path) -> None:
    """HAM10000 reader layout: metadata CSV plus the two image folders."""
    _require(dest, "ham10000", ["HAM10000_metadata.csv", "HAM10000_images_part_1",
                                "HAM10000_images_part_2"])


def _prepare_isic2019(dest: Path) -> None:
    _require(dest, "isic2019", ["ISIC_2019_Training_GroundTruth.csv",
                                "ISIC_2019_Training_Metadata.csv", "ISIC_2019_Training_Input"])


def _prepare_ph2(dest: Path) -> None:
    """The RAR unpacks to ``PH2Dataset/``; the PH2 reader wants its contents in ``dest``."""
    unpacked = dest / "PH2Dataset"
    if unpacked.is_dir():
        _merge_move(unpacked, dest)
    _require(dest, "ph2", ["PH2_dataset.txt", "PH2 Dataset images"])


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

_DATAVERSE = "https://dataverse.harvard.edu/api/access/datafile/{}"
_ISIC = "https://isic-challenge-data.s3.amazonaws.com/2019/{}"

SOURCES: dict[str, DatasetSource] = {
    "ham10000": DatasetSource(
        name="ham10000",
        description="HAM10000: 10,015 dermatoscopic images of pigmented skin lesions in 7 "
                    "diagnostic classes (akiec, bcc, bkl, df, mel, nv, vasc), with lesion_id, "
                    "age, sex and body site (Harvard Dataverse, version 4).",
        homepage="https://doi.org/10.7910/DVN/DBW86T",
        license="CC BY-NC 4.0 (non-commercial use, attribution required)",
        citation="Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection "
                 "of multi-source dermatoscopic images of common pigmented skin lesions. "
                 "Sci. Data 5, 180161 (2018). doi:10.1038/sdata.2018.161",
        # Dataverse file ids of dataset doi:10.7910/DVN/DBW86T. The whole dataset is also served
        # as one zip by /api/access/dataset/:persistentId/?persistentId=doi:10.7910/DVN/DBW86T,
        # but that bundle is streamed without a length and cannot be resumed, so the three
        # needed files are fetched one by one. Sizes and MD5s are the ones Dataverse publishes
        # (it publishes no SHA-256). The metadata is requested in its original, uploaded CSV
        # form (format=original) rather than Dataverse's derived .tab.
        files=(
            RemoteFile(_DATAVERSE.format(3172585), "HAM10000_images_part_1.zip",
                       size=1_366_522_108, md5="4639bfa73ab251610530a97c898e6e46", extract=True),
            RemoteFile(_DATAVERSE.format(3172584), "HAM10000_images_part_2.zip",
                       size=1_403_566_547, md5="da43d6cc50f6613013be07e8986b384b", extract=True),
            RemoteFile(_DATAVERSE.format(4338392) + "?format=original", "HAM10000_metadata.csv",
                       md5="8f85fb1aa29d80a2797247e434deb79d"),
        ),
        prepare=_prepare_ham10000,
    ),
    "isic2019": DatasetSource(
        name="isic2019",
        description="ISIC 2019 challenge training set: 25,331 dermoscopic images in 8 diagnostic "
                    "classes (MEL, NV, BCC, AK, BKL, DF, VASC, SCC) with age, sex, site and "
                    "lesion_id metadata (BCN_20000, HAM10000 and MSK sources).",
        homepage="https://challenge.isic-archive.com/data/#2019",
        license="CC BY-NC 4.0 (non-commercial use; cite BCN_20000, HAM10000 and MSK)",
        citation="ISIC 2019 data is provided courtesy of: BCN_20000 Dataset (c) Department of "
                 "Dermatology, Hospital Clinic de Barcelona; HAM10000 Dataset (c) ViDIR Group, "
                 "Medical University of Vienna, doi:10.1038/sdata.2018.161; MSK Dataset "
                 "(c) Anonymous, arXiv:1710.05006, arXiv:1902.03368.",
        # The ISIC archive publishes no checksums for these files: their SHA-256 is computed on
        # download and recorded in DEST/SHA256SUMS. Sizes come from Content-Length.
        files=(
            RemoteFile(_ISIC.format("ISIC_2019_Training_Input.zip"),
                       "ISIC_2019_Training_Input.zip", extract=True),
            RemoteFile(_ISIC.format("ISIC_2019_Training_GroundTruth.csv"),
                       "ISIC_2019_Training_GroundTruth.csv"),
            RemoteFile(_ISIC.format("ISIC_2019_Training_Metadata.csv"),
                       "ISIC_2019_Training_Metadata.csv"),
        ),
        prepare=_prepare_isic2019,
    ),
    "ph2": DatasetSource(
        name="ph2",
        description="PH2: 200 dermoscopic images (80 common nevi, 80 atypical nevi, 40 "
                    "melanomas) from Hospital Pedro Hispano, Matosinhos, with lesion masks, "
                    "clinical/histological diagnosis and dermoscopic criteria.",
        homepage="https://www.fc.up.pt/addi/ph2%20database.html",
        license="free for research and benchmarking; cite Mendonca et al. 2013 "
                "(terms on the ADDI project page)",
        citation="Mendonca T., Ferreira P. M., Marques J. S., Marcal A. R. S., Rozeira J. PH2 - "
                 "A dermoscopic image database for research and benchmarking. 35th Annual "
                 "International Conference of the IEEE EMBS, 2013, pp. 5437-5440.",
        # Distributed by the ADDI project as a RAR archive on Dropbox, with no published
        # checksum: its SHA-256 is computed on download and recorded in DEST/SHA256SUMS.
        files=(
            RemoteFile("https://www.dropbox.com/s/k88qukc20ljnbuo/PH2Dataset.rar?dl=1",
                       "PH2Dataset.rar", extract=True),
        ),
        prepare=_prepare_ph2,
    ),
}


def _source(name: str) -> DatasetSource:
    key = str(name).strip().lower()
    if key not in SOURCES:
        raise DownloadError(f"unknown dataset {name!r}; known datasets: {', '.join(SOURCES)}")
    return SOURCES[key]


# --------------------------------------------------------------------------------------------
# Whole datasets
# --------------------------------------------------------------------------------------------

def mirror_url(file: RemoteFile, mirror: str) -> str:
    """The URL of ``file`` on ``mirror``: ``<mirror>/<filename>``."""
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(file.filename)}"


def download_dataset(name: str, dest: str | os.PathLike, *, mirror: str | None = None,
                     progress: bool = True) -> Path:
    """Download dataset ``name`` into ``dest`` and lay it out for its reader; return ``dest``.

    Files already complete in ``dest`` are skipped and partial ones resumed. ``mirror`` (default:
    the ``DERMLEARN_DOWNLOAD_MIRROR`` environment variable) replaces each file's URL with
    ``<mirror>/<filename>``. Raises :class:`DownloadError` for an unknown name (listing the known
    ones) and for any download, checksum or extraction failure.
    """
    source = _source(name)
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{dest}: exists and is not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    recorded = _read_sums(dest / SUMS_FILE)
    digests: dict[str, str] = {}
    for file in source.files:
        url = mirror_url(file, mirror) if mirror else file.url
        path = dest / file.filename
        complete, digest = (_check_existing(url, path, sha256=file.sha256, md5=file.md5,
                                            expected_size=file.size, timeout=60)
                            if path.is_file() else (False, None))
        if complete:
            digest = (digest or recorded.get(file.filename)
                      or _hash_file(path)["sha256"].hexdigest())
        else:
            digest = _fetch(url, path, sha256=file.sha256, md5=file.md5,
                            expected_size=file.size, progress=progress, chunk_size=1 << 20,
                            timeout=60)
        digests[file.filename] = digest
        _write_sums(dest / SUMS_FILE, {file.filename: digest})
    for file in source.files:
        if file.extract:
            _extract_once(dest / file.filename, dest, digests[file.filename], progress)
    if source.prepare is not None:
        source.prepare(dest)
    return dest


def _extract_once(archive: Path, dest: Path, digest: str, progress: bool) -> None:
    """Extract ``archive`` unless a stamp says this exact archive was already extracted."""
    stamp = dest / STATE_DIR / f"{archive.name}.extracted"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return
    extract_archive(archive, dest, progress=progress)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest + "\n")


def _read_sums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            digest, _, filename = line.partition("  ")
            if filename:
                sums[filename.lstrip("*")] = digest.strip().lower()
    return sums


def _write_sums(path: Path, digests: dict[str, str]) -> None:
    """Merge ``digests`` into ``path`` (``sha256sum`` format), atomically."""
    sums = {**_read_sums(path), **digests}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{sums[f]}  {f}\n" for f in sorted(sums)), encoding="utf-8")
    os.replace(tmp, path)


def describe(name: str) -> str:
    """A printable description of dataset ``name``: what it is, licence, homepage and files."""
    source = _source(name)
    lines = [f"{source.name}: {source.description}",
             f"  homepage: {source.homepage}",
             f"  licence:  {source.license}"]
    if source.citation:
        lines.append(f"  cite:     {source.citation}")
    lines.append("  files:")
    for file in source.files:
        size = _human_size(file.size) if file.size is not None else "size from server"
        if file.sha256:
            check = f"sha256 {file.sha256}"
        elif file.md5:
            check = f"md5 {file.md5} (publisher)"
        else:
            check = "no published checksum; SHA-256 recorded in SHA256SUMS"
        lines.append(f"    {file.filename}  [{size}; {check}]")
        lines.append(f"      {file.url}")
    return "\n".join(lines)


def _human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"

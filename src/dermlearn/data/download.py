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

This module is the dataset registry (:data:`SOURCES`) and the per-dataset steps; fetching one
file is :mod:`dermlearn.data.fetch`, extracting archives :mod:`dermlearn.data.archives`.
"""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dermlearn.data.archives import _merge_move, extract_archive
from dermlearn.data.fetch import _check_existing, _fetch, _hash_file
from dermlearn.errors import DownloadError

__all__ = ["MIRROR_ENV", "SOURCES", "DatasetSource", "RemoteFile", "describe",
           "download_dataset", "mirror_url"]

#: Environment variable naming a mirror used when ``download_dataset(mirror=None)``.
MIRROR_ENV = "DERMLEARN_DOWNLOAD_MIRROR"
#: File (in DEST) listing the SHA-256 of every downloaded file, in ``sha256sum`` format.
SUMS_FILE = "SHA256SUMS"
#: Hidden folder (in DEST) holding the "archive already extracted" stamps.
STATE_DIR = ".dermlearn-download"


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

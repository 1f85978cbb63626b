"""A folder with one sub-folder per class (``root/<label>/<image>.jpg``), as Keras and
torchvision's ImageFolder expect, or a ``.zip`` of such folders (read in place, possibly under
one top folder: ``photos.zip`` holding ``photos/nv/x.jpg``). There is no lesion information:
each image is its own lesion.

Images are found anywhere below a class folder (``nv/patientA/lesion1.jpg``), symbolic links to
folders followed. DICOM files (``.dcm``) are images too; their header's patient age, sex and
body site fill the ``age``, ``sex`` and ``site`` columns. Every other file that is not read is
named in a ``skipped_file`` warning (a ``README.txt``, a ``.gif``, an image outside any class
folder); hidden files and OS bookkeeping (``.DS_Store``, ``__MACOSX/``, ``Thumbs.db``) are
ignored without a word.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pandas as pd

from dermlearn.data.ids import unique_image_ids
from dermlearn.data.images import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS, dicom_metadata
from dermlearn.data.manifest import Problem
from dermlearn.data.readers._common import clean_age, clean_sex, clean_site
from dermlearn.data.sources import is_ignored, is_zip_archive, list_archive, walk_files
from dermlearn.errors import DataError, ImageDecodeError


class _Entry(NamedTuple):
    rel: PurePosixPath  # below the dataset root
    path: str           # absolute file path, or zip member path (see dermlearn.data.sources)
    broken: str = ""    # why the entry is no regular file ("" for a file)


def _class_dirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not is_ignored([d.name]))


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _zip_root(names: list[str]) -> str:
    """The one top folder to look inside (``photos`` of ``photos/nv/x.jpg``), or ""."""
    kept = [p for n in names if not is_ignored(p := PurePosixPath(n).parts)]
    tops = {parts[0] for parts in kept if len(parts) > 1}
    if len(tops) != 1 or any(len(parts) == 1 and _is_image(parts[0]) for parts in kept):
        return ""
    # Only a folder that holds class folders (images two levels down) is a wrapper: a zip of
    # one class folder (nv/x.jpg) is one class, not a wrapper of loose images.
    if any(len(parts) > 2 and _is_image(parts[-1]) for parts in kept):
        return next(iter(tops))
    return ""


def _zip_entries(path: Path) -> list[_Entry]:
    listing = list_archive(path)  # DataError: unreadable or zip-slip member names
    root = _zip_root(listing.names)
    entries = []
    for name, member in zip(listing.names, listing.paths):
        parts = PurePosixPath(name).parts
        if root and len(parts) > 1 and parts[0] == root:
            parts = parts[1:]  # files beside the top folder keep their place (and are skipped)
        entries.append(_Entry(PurePosixPath(*parts), member))
    return entries


def _dir_entries(path: Path) -> list[_Entry]:
    entries = []
    for file in sorted(walk_files(path, skip_hidden=True)):
        broken = "" if file.is_file() else \
            "broken symbolic link" if file.is_symlink() and not file.exists() else \
            "not a regular file"
        entries.append(_Entry(PurePosixPath(*file.relative_to(path).parts), str(file), broken))
    return entries


def _entries(path: Path) -> list[_Entry]:
    entries = _zip_entries(path) if is_zip_archive(path) else _dir_entries(path)
    return [e for e in entries if not is_ignored(e.rel.parts)]


def detect(path: Path) -> bool:
    # Any zip is taken here (the one reader of archives): read() says what it lacks.
    if is_zip_archive(path):
        return True
    if not path.is_dir():
        return False
    # as read() takes them: images anywhere below a class folder (e.g. nv/patientA/lesion1.jpg)
    return any(_is_image(f.name) for d in _class_dirs(path)
               for f in walk_files(d, skip_hidden=True))


def _skip_reason(entry: _Entry) -> str:
    if entry.broken:
        return entry.broken
    suffix = entry.rel.suffix.lower()
    if len(entry.rel.parts) == 1 and suffix in IMAGE_EXTENSIONS:
        return "image outside any class folder (its class is unknown)"
    if suffix in UNSUPPORTED_IMAGE_EXTENSIONS:
        return f"image type {suffix} is not supported (convert it to JPEG or PNG)"
    return f"not an image file ({suffix or 'no extension'})"


def read(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    is_zip = is_zip_archive(path)
    if not (is_zip or path.is_dir()):
        raise DataError(f"{path}: not a folder or .zip archive")
    files: list[tuple[str, _Entry]] = []
    skipped: list[Problem] = []
    for entry in _entries(path):
        if not entry.broken and len(entry.rel.parts) > 1 and _is_image(entry.rel.name):
            files.append((entry.rel.parts[0], entry))
        else:
            skipped.append(Problem("skipped_file", f"skipped {entry.rel}: {_skip_reason(entry)}",
                                   file=entry.path, severity="warning"))
    if not files:
        found = f" ({len(skipped)} other file(s) skipped, e.g. {skipped[0].message})" \
            if skipped else ""
        layout = "nv/x.jpg, mel/y.jpg (or photos/nv/x.jpg)" if is_zip else "nv/x.jpg, mel/y.jpg"
        score = " (dermlearn predict takes a zip of loose images as it is)" if is_zip else ""
        raise DataError(f"{path}: no images found in class sub-folders{found}; a folder dataset "
                        f"holds one folder per class, e.g. {layout}{score}")
    # Ids are the file stems, made unique (by the path below a class folder) where two files
    # share a stem: patientA/lesion1.jpg and patientB/lesion1.jpg are two images.
    root = os.path.abspath(path)
    ids = unique_image_ids([os.path.join(root, *e.rel.parts) for _, e in files], root=root)
    rows = [{"image_id": image_id, "path": entry.path, "label": label, "lesion_id": image_id,
             "label_raw": label,
             "source_row": str(entry.rel) if is_zip else str(Path(*entry.rel.parts))}
            for image_id, (label, entry) in zip(ids, files)]
    table = pd.DataFrame(rows)
    for column in ("patient_id", "label_source"):
        table[column] = None
    metadata, dicom_problems = _dicom_columns([e.path for _, e in files], path)
    table["age"] = clean_age(metadata["age"])
    table["sex"] = clean_sex(metadata["sex"])
    table["site"] = clean_site(metadata["site"])
    problems = [Problem("no_lesion_id", "folder datasets carry no lesion ids: each image is treated "
                        "as its own lesion (splits may leak if one lesion has several images)",
                        file=str(path), severity="warning")]
    return table, problems + dicom_problems + skipped


def _dicom_columns(paths: list[str], root: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """age/sex/site per image, from the headers of the DICOM files among ``paths``."""
    values = {"age": [""] * len(paths), "sex": [""] * len(paths), "site": [""] * len(paths)}
    problems: list[Problem] = []
    for i, path in enumerate(paths):
        if not path.lower().endswith(".dcm"):
            continue
        try:
            found = dicom_metadata(path)
        except ImageDecodeError as exc:
            if "pip install" in (exc.reason or ""):  # pydicom missing: say it once
                n = sum(p.lower().endswith(".dcm") for p in paths)
                problems.append(Problem("dicom_unreadable", f"{n} DICOM file(s): "
                                        f"{exc.reason}", file=str(root), severity="warning"))
                break
            continue  # a corrupt file: check_images / training name it
        for key in values:
            if found[key] is not None:
                values[key][i] = str(found[key])
    return pd.DataFrame(values), problems

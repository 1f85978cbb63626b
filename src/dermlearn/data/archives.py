"""Extracting downloaded archives safely: zip (refusing zip-slip paths and symlinks) and RAR
(through an external tool, output checked for symlinks), into ``dest/<folder>``.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from dermlearn.errors import DownloadError

__all__ = ["RAR_TOOLS", "extract_archive"]

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

"""Tests for dermlearn.data.download, against a local HTTP server on 127.0.0.1 only."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import re
import socket
import sys
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dermlearn.data import download as dl
from dermlearn.data.archives import extract_archive
from dermlearn.data.download import (
    MIRROR_ENV,
    SOURCES,
    RemoteFile,
    describe,
    download_dataset,
    mirror_url,
)
from dermlearn.data.fetch import download_file
from dermlearn.errors import DownloadError

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32) + b"\xff\xd9"


# ---------------------------------------------------------------------------------------------
# Local server: serves files from a folder, supports Range, can drop a response, counts requests
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FileServer:
    root: Path
    url: str = ""
    requests: list[tuple[str, str, str | None]] = dataclasses.field(default_factory=list)
    sent: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    cut_after: dict[str, int] = dataclasses.field(default_factory=dict)  # one-shot, per file
    ignore_range: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def gets(self, name: str | None = None) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and name in (None, r[1])]

    def heads(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "HEAD"]

    def add(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.url}/{urllib.parse.quote(name)}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.command, name, rng))
            path = state.root / name
            if not name or ".." in Path(name).parts or not path.is_file():
                self.send_error(404, "Not Found")
                return
            data = path.read_bytes()
            size = len(data)
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip()) if rng else None
            if match and not state.ignore_range:
                start = int(match[1])
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end = min(int(match[2]) if match[2] else size - 1, size - 1)
                payload = data[start:end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                payload = data
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            with state.lock:
                cut = state.cut_after.pop(name, None)
                if cut is not None:  # simulate a dropped connection: send part, then close
                    payload = payload[:cut]
                    self.close_connection = True
                state.sent.append((name, len(payload)))  # before writing: no race with asserts
            self.wfile.write(payload)
            self.wfile.flush()

    return Handler


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    state = FileServer(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _without_checksums(name: str) -> dl.DatasetSource:
    source = SOURCES[name]
    return dataclasses.replace(source, files=tuple(
        dataclasses.replace(f, sha256=None, md5=None, size=None) for f in source.files))


# ---------------------------------------------------------------------------------------------
# download_file
# ---------------------------------------------------------------------------------------------

def test_full_download_with_checksum(server, tmp_path):
    data = _blob(300_000)
    url = server.add("blob.bin", data)
    out = download_file(url, tmp_path / "out" / "blob.bin", sha256=_sha256(data),
                        expected_size=len(data), progress=False, chunk_size=64 << 10)
    assert out == tmp_path / "out" / "blob.bin"
    assert out.read_bytes() == data
    assert not (tmp_path / "out" / "blob.bin.part").exists()
    assert server.gets() == [("GET", "blob.bin", None)]


def test_resume_after_dropped_connection(server, tmp_path):
    data = _blob(300_000, seed=1)
    url = server.add("big.bin", data)
    dest = tmp_path / "big.bin"
    server.cut_after["big.bin"] = 100_000
    with pytest.raises(DownloadError, match=r"100,000 of 300,000 bytes.*re-run to resume"):
        download_file(url, dest, sha256=_sha256(data), progress=False, chunk_size=16 << 10)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 100_000 and not dest.exists()

    download_file(url, dest, sha256=_sha256(data), progress=False, chunk_size=16 << 10)
    assert dest.read_bytes() == data
    assert not part.exists()
    assert [r[2] for r in server.gets()] == [None, "bytes=100000-"]
    assert server.sent == [("big.bin", 100_000), ("big.bin", 200_000)]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = _blob(50_000, seed=2)
    url = server.add("f.bin", data)
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes from some other file")
    server.ignore_range = True
    download_file(url, tmp_path / "f.bin", sha256=_sha256(data), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.gets()[0][2] == "bytes=32-"


def test_range_not_satisfiable_means_part_is_complete(server, tmp_path):
    data = _blob(10_000, seed=3)
    url = server.add("f.bin", data)
    (tmp_path / "f.bin.part").write_bytes(data)
    download_file(url, tmp_path / "f.bin", sha256=_sha256(data), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.sent == []  # the 416 answer carried no body


def test_checksum_mismatch_deletes_file(server, tmp_path):
    data = _blob(20_000, seed=4)
    url = server.add("bad.zip", data)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "bad.zip", sha256=wrong, progress=False)
    message = str(info.value)
    assert "bad.zip" in message and wrong in message and _sha256(data) in message
    assert not (tmp_path / "bad.zip").exists() and not (tmp_path / "bad.zip.part").exists()


def test_md5_checked(server, tmp_path):
    data = _blob(5_000, seed=5)
    url = server.add("m.bin", data)
    download_file(url, tmp_path / "ok.bin", md5=hashlib.md5(data).hexdigest(), progress=False)
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        download_file(url, tmp_path / "bad.bin", md5="f" * 32, progress=False)
    assert not (tmp_path / "bad.bin").exists()


def test_wrong_size_from_server_is_an_error(server, tmp_path):
    url = server.add("s.bin", _blob(1_000))
    with pytest.raises(DownloadError, match="reports 1,000 bytes, expected 2,000"):
        download_file(url, tmp_path / "s.bin", expected_size=2_000, progress=False)


def test_http_404_names_url_and_status(server, tmp_path):
    url = f"{server.url}/missing.zip"
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "missing.zip", progress=False)
    assert url in str(info.value) and "404" in str(info.value)
    assert not (tmp_path / "missing.zip").exists()


def test_unreachable_server_keeps_part(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    (tmp_path / "x.bin.part").write_bytes(b"12345")
    with pytest.raises(DownloadError, match=re.escape(url)):
        download_file(url, tmp_path / "x.bin", progress=False, timeout=5)
    assert (tmp_path / "x.bin.part").read_bytes() == b"12345"


def test_complete_file_is_skipped(server, tmp_path):
    data = _blob(40_000, seed=6)
    url = server.add("done.bin", data)
    dest = tmp_path / "done.bin"
    download_file(url, dest, sha256=_sha256(data), progress=False)
    assert len(server.gets()) == 1
    download_file(url, dest, sha256=_sha256(data), progress=False)  # checksum known: no request
    assert len(server.requests) == 1
    download_file(url, dest, progress=False)  # nothing known: HEAD for the size, no GET
    assert len(server.gets()) == 1 and len(server.heads()) == 1
    assert dest.read_bytes() == data


def test_incomplete_or_corrupt_existing_file_is_downloaded_again(server, tmp_path):
    data = _blob(40_000, seed=7)
    url = server.add("f.bin", data)
    dest = tmp_path / "f.bin"
    dest.write_bytes(data[:1000])  # wrong size (per HEAD)
    download_file(url, dest, progress=False)
    assert dest.read_bytes() == data
    dest.write_bytes(bytes(len(data)))  # right size, wrong content
    download_file(url, dest, sha256=_sha256(data), expected_size=len(data), progress=False)
    assert dest.read_bytes() == data
    assert len(server.gets()) == 2


# ---------------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt",
                                    "..\\evil.txt", "C:/evil.txt"])
def test_zip_slip_member_refused(tmp_path, member):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip({"ok/first.txt": b"fine", member: b"pwned"}))
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(DownloadError, match="refusing to extract member"):
        extract_archive(archive, dest, progress=False)
    assert not (tmp_path / "dest" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.is_file() for p in (tmp_path / "dest").rglob("*"))  # nothing written


def test_extract_flat_and_nested_zip_into_one_folder(tmp_path):
    flat = tmp_path / "Pack.zip"
    flat.write_bytes(_zip({"a.jpg": JPEG, "__MACOSX/._a.jpg": b"junk"}))
    nested = tmp_path / "Other.zip"
    nested.write_bytes(_zip({"Other/": b"", "Other/b.jpg": JPEG}))
    out = tmp_path / "out"
    assert extract_archive(flat, out, progress=False) == out / "Pack"
    assert extract_archive(nested, out, progress=False) == out / "Other"
    assert (out / "Pack" / "a.jpg").read_bytes() == JPEG
    assert (out / "Other" / "b.jpg").read_bytes() == JPEG
    assert not (out / "Other" / "Other").exists() and not (out / "Pack" / "__MACOSX").exists()


def test_corrupt_zip_is_a_download_error(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        extract_archive(archive, tmp_path / "out", progress=False)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

ISIC_GT = ("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
           "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
           "ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
ISIC_META = ("image,age_approx,anatom_site_general,lesion_id,sex\n"
             "ISIC_0000000,55.0,anterior torso,,female\n"
             "ISIC_0000001,30.0,upper extremity,,male\n")


def _serve_isic(server: FileServer) -> dict[str, bytes]:
    files = {
        "ISIC_2019_Training_Input.zip": _zip({
            "ISIC_2019_Training_Input/": b"",
            "ISIC_2019_Training_Input/ISIC_0000000.jpg": JPEG,
            "ISIC_2019_Training_Input/ISIC_0000001.jpg": JPEG,
        }),
        "ISIC_2019_Training_GroundTruth.csv": ISIC_GT.encode(),
        "ISIC_2019_Training_Metadata.csv": ISIC_META.encode(),
    }
    for name, data in files.items():
        server.add(name, data)
    return files


def test_download_isic2019_layout(server, tmp_path):
    files = _serve_isic(server)
    dest = download_dataset("isic2019", tmp_path / "isic", mirror=server.url + "/",
                            progress=False)
    assert dest == tmp_path / "isic"
    assert sorted(p.name for p in (dest / "ISIC_2019_Training_Input").iterdir()) == [
        "ISIC_0000000.jpg", "ISIC_0000001.jpg"]
    assert (dest / "ISIC_2019_Training_GroundTruth.csv").read_text() == ISIC_GT
    assert (dest / "ISIC_2019_Training_Metadata.csv").read_text() == ISIC_META
    sums = (dest / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{_sha256(files[n])}  {n}" for n in sorted(files)]
    assert {r[1] for r in server.gets()} == set(files)

    from dermlearn.data.readers import isic
    assert isic.detect(dest)


def test_rerun_downloads_and_extracts_nothing(server, tmp_path, monkeypatch):
    _serve_isic(server)
    monkeypatch.setenv(MIRROR_ENV, server.url)  # the mirror may come from the environment
    dest = download_dataset("isic2019", tmp_path / "isic", progress=False)
    image = dest / "ISIC_2019_Training_Input" / "ISIC_0000000.jpg"
    image.write_bytes(b"edited")
    gets = len(server.gets())
    download_dataset("isic2019", dest, progress=False)
    assert len(server.gets()) == gets  # complete files skipped (HEAD only)
    assert image.read_bytes() == b"edited"  # the unchanged archive was not extracted again


def test_download_ham10000_layout(server, tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "ham10000", _without_checksums("ham10000"))
    metadata = ("lesion_id,image_id,dx,dx_type,age,sex,localization,dataset\n"
                "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp,vidir_modern\n"
                "HAM_0000119,ISIC_0029000,mel,histo,60.0,female,back,vidir_modern\n")
    server.add("HAM10000_images_part_1.zip", _zip({"ISIC_0027419.jpg": JPEG}))
    server.add("HAM10000_images_part_2.zip", _zip({"ISIC_0029000.jpg": JPEG}))
    server.add("HAM10000_metadata.csv", metadata.encode())
    dest = download_dataset("HAM10000", tmp_path / "ham", mirror=server.url, progress=False)
    assert (dest / "HAM10000_metadata.csv").read_text() == metadata
    assert (dest / "HAM10000_images_part_1" / "ISIC_0027419.jpg").read_bytes() == JPEG
    assert (dest / "HAM10000_images_part_2" / "ISIC_0029000.jpg").read_bytes() == JPEG
    assert len((dest / "SHA256SUMS").read_text().splitlines()) == 3

    from dermlearn.data.readers import ham10000
    assert ham10000.detect(dest)


def test_published_checksums_apply_to_mirrors(server, tmp_path):
    server.add("HAM10000_images_part_1.zip", _zip({"ISIC_0027419.jpg": JPEG}))
    with pytest.raises(DownloadError, match="expected 1,366,522,108"):
        download_dataset("ham10000", tmp_path / "ham", mirror=server.url, progress=False)


def test_ph2_without_extractor_keeps_archive(server, tmp_path, monkeypatch):
    server.add("PH2Dataset.rar", b"Rar!\x1a\x07\x00 fixture")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    dest = tmp_path / "ph2"
    with pytest.raises(DownloadError) as info:
        download_dataset("ph2", dest, mirror=server.url, progress=False)
    message = str(info.value)
    assert all(tool in message for tool in ("unar", "unrar", "7z", "bsdtar"))
    assert "apt install" in message and str(dest / "PH2Dataset.rar") in message
    assert (dest / "PH2Dataset.rar").is_file()
    assert "PH2Dataset.rar" in (dest / "SHA256SUMS").read_text()


FAKE_UNAR = '''#!{python}
"""Stands in for unar: records its argv and unpacks a PH2-like tree into -output-directory."""
import json, pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-output-directory") + 1])
pathlib.Path({log!r}).write_text(json.dumps(sys.argv))
root = out / "PH2Dataset"
image = root / "PH2 Dataset images" / "IMD002" / "IMD002_Dermoscopic_Image" / "IMD002.bmp"
image.parent.mkdir(parents=True)
image.write_bytes(b"BM")
(root / "PH2_dataset.txt").write_text("|| Name || Histological Diagnosis ||\\n")
'''


def test_ph2_extracted_with_external_tool_and_flattened(server, tmp_path, monkeypatch):
    import json

    server.add("PH2Dataset.rar", b"Rar!\x1a\x07\x00 fixture")
    bin_dir, log = tmp_path / "bin", tmp_path / "unar-argv.json"
    bin_dir.mkdir()
    tool = bin_dir / "unar"
    tool.write_text(FAKE_UNAR.format(python=sys.executable, log=str(log)))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    dest = download_dataset("ph2", tmp_path / "ph2", mirror=server.url, progress=False)
    assert (dest / "PH2_dataset.txt").is_file()
    assert (dest / "PH2 Dataset images" / "IMD002" / "IMD002_Dermoscopic_Image"
            / "IMD002.bmp").read_bytes() == b"BM"
    assert not (dest / "PH2Dataset").exists()
    argv = json.loads(log.read_text())
    assert argv[0] == str(tool) and argv[-1] == str((dest / "PH2Dataset.rar").resolve())

    from dermlearn.data.readers import ph2
    assert ph2.detect(dest)


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(DownloadError, match="known datasets: ham10000, isic2019, ph2"):
        download_dataset("isic2099", tmp_path)
    with pytest.raises(DownloadError, match="unknown dataset 'nope'"):
        describe("nope")
    assert not any(tmp_path.iterdir())


def test_dataset_info_and_sources():
    text = describe("isic2019")
    assert "CC BY-NC 4.0" in text and "challenge.isic-archive.com" in text
    assert "ISIC_2019_Training_Input.zip" in text and "no published checksum" in text
    assert "md5 4639bfa73ab251610530a97c898e6e46" in describe("ham10000")
    for name, source in SOURCES.items():
        assert source.name == name and source.files and source.prepare is not None
        assert all(f.url.startswith("https://") for f in source.files)


def test_mirror_url_uses_filename_only():
    file = RemoteFile("https://example.org/deep/path/x.csv?dl=1", "PH2 Dataset.rar")
    assert mirror_url(file, "https://mirror.local/derm/") == \
        "https://mirror.local/derm/PH2%20Dataset.rar"


def test_cli_download_end_to_end(server, tmp_path, capsys):
    from dermlearn.cli import main

    _serve_isic(server)
    dest = tmp_path / "isic"
    assert main(["data", "download", "isic2019", str(dest), "--mirror", server.url]) == 0
    out = capsys.readouterr().out
    assert "CC BY-NC 4.0" in out and str(dest) in out
    assert (dest / "ISIC_2019_Training_Input" / "ISIC_0000001.jpg").is_file()

    assert main(["data", "download", "ph2", str(tmp_path / "ph2"),
                 "--mirror", f"{server.url}/nowhere"]) == 2
    err = capsys.readouterr().err
    assert "dermlearn: error:" in err and "HTTP 404" in err and "PH2Dataset.rar" in err

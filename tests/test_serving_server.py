"""``dermlearn serve`` as a real uvicorn process on a loopback port: requests, 1,000 malformed
uploads (no 5xx, the worker stays up, memory stays bounded), clean shutdown."""
from __future__ import annotations

import io
import json
import random
import signal
import struct
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dermlearn.serving.app import app_from_env
from dermlearn.serving.service import ENV_CONFIG, ServiceConfig

from serving_fixtures import ServerProcess, jpeg_bytes, make_tiny_model, png_bytes, synthetic_lesion

MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("server") / "model", image_size=64)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("server-cwd")
    with ServerProcess(model_dir, "--no-ood", "--backend", "torch", "--max-upload-mb", str(MAX_UPLOAD_MB),
                       "--threads", "1", "--log-level", "warning", cwd=cwd) as proc:
        yield proc
    log = proc.log.decode(errors="replace")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15)
    assert proc.process.returncode in (0, -signal.SIGTERM), log[-3000:]
    assert "Traceback" not in log and "Corrupt EXIF" not in log, log[-3000:]
    assert list(cwd.iterdir()) == []  # nothing written where the server ran


def test_real_server_answers(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["backend"] == "torch"
        data = jpeg_bytes(synthetic_lesion())
        response = http.post("/v1/predict", files={"image": ("a.jpg", data, "image/jpeg")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-6
        assert body["ood"]["available"] is False
        assert http.get("/").headers["content-type"].startswith("text/html")
        assert http.get("/v1/model").json()["classes"][0]["id"] == "nv"
        assert "server" not in http.get("/health").headers  # no server banner


# -- fuzzing ---------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int, rng: random.Random) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, rng.choice([0, 2, 6]), 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """Patch the frame header (SOF0/SOF2) of a real JPEG to claim another size."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            break
    return bytes(data)


def _small_image(rng: random.Random) -> Image.Image:
    arr = np.random.default_rng(rng.randrange(2**32)).integers(
        0, 256, (rng.randint(1, 80), rng.randint(1, 80), 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    mode = rng.choice(["RGB", "L", "RGBA", "CMYK", "P", "I;16", "1"])
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    return image.convert(mode)


def _encode(image: Image.Image, rng: random.Random) -> bytes:
    fmt = rng.choice(["PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"])
    if fmt in ("JPEG", "WEBP") and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    if fmt == "WEBP" and image.mode == "CMYK":
        image = image.convert("RGB")
    if fmt == "BMP" and image.mode in ("CMYK", "I;16"):
        image = image.convert("RGB")
    if fmt == "GIF":
        image = image.convert("P")
    buf = io.BytesIO()
    try:
        image.save(buf, format=fmt)
    except (OSError, ValueError):  # a mode this format cannot store
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


def malformed_requests(n: int, seed: int = 0):
    """``n`` (kind, httpx request kwargs) of malformed, random, lying or odd uploads."""
    rng = random.Random(seed)
    photo = jpeg_bytes(synthetic_lesion(size=120))
    png = png_bytes(synthetic_lesion(size=120))
    kinds = ["random bytes", "truncated jpeg", "truncated png", "bit-flipped jpeg",
             "bit-flipped png", "text named .jpg", "empty", "huge png header",
             "huge jpeg header", "wrong content type", "raw body", "wrong field name",
             "garbage multipart", "no boundary", "odd image", "magic then garbage",
             "oversized", "html named .png"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        ctype = rng.choice(["image/jpeg", "image/png", "text/plain", "application/json",
                            "application/octet-stream", "", "image/x-nonsense"])
        name = rng.choice(["photo.jpg", "x.png", "a.txt", "", "../../etc/passwd", "é.jpeg"])
        field = "image"
        if kind == "random bytes":
            data = rng.randbytes(rng.randint(1, 5000))
        elif kind == "truncated jpeg":
            data = photo[:rng.randint(1, len(photo) - 1)]
        elif kind == "truncated png":
            data = png[:rng.randint(1, len(png) - 1)]
        elif kind in ("bit-flipped jpeg", "bit-flipped png"):
            data = bytearray(photo if "jpeg" in kind else png)
            for _ in range(rng.randint(1, 30)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        elif kind == "text named .jpg":
            data, name = b"This is not a photograph.\n" * rng.randint(1, 50), "mole.jpg"
        elif kind == "empty":
            data = b""
        elif kind == "huge png header":
            data = _png_declaring(rng.randint(9_000, 2**31 - 1), rng.randint(9_000, 2**31 - 1),
                                  rng)
        elif kind == "huge jpeg header":
            data = _jpeg_declaring(photo, rng.randint(9_000, 65_535), rng.randint(9_000, 65_535))
        elif kind == "wrong content type":
            data, ctype = photo, rng.choice(["text/plain", "application/pdf", "video/mp4"])
        elif kind == "raw body":
            yield kind, {"content": photo, "headers": {"content-type": rng.choice(
                ["image/jpeg", "application/octet-stream", "text/plain"])}}
            continue
        elif kind == "wrong field name":
            field = rng.choice(["file", "img", "IMAGE", ""])
            data = photo
        elif kind == "garbage multipart":
            yield kind, {"content": rng.randbytes(rng.randint(0, 3000)), "headers": {
                "content-type": "multipart/form-data; boundary=" + rng.choice(
                    ["abc", "x" * 70, "----WebKitFormBoundary7MA4YWxk"])}}
            continue
        elif kind == "no boundary":
            yield kind, {"content": b"--x\r\n\r\n", "headers": {
                "content-type": "multipart/form-data"}}
            continue
        elif kind == "odd image":
            data = _encode(_small_image(rng), rng)
        elif kind == "magic then garbage":
            magic = rng.choice([b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"BM",
                                b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"%PDF-1.4",
                                b"\x00\x00\x01\x00"])
            data = magic + rng.randbytes(rng.randint(0, 2000))
        elif kind == "oversized":
            data = b"\xff\xd8\xff" + rng.randbytes(MAX_UPLOAD_MB * 2**20 + rng.randint(1, 5000))
        else:  # html named .png
            data, name = b"<html><script>alert(1)</script></html>", "x.png"
        yield kind, {"files": {field: (name, data, ctype)}}


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_fuzz_1000_malformed_uploads(server):
    statuses: dict[str, set[int]] = {}
    server_errors = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        requests = list(malformed_requests(1000))
        assert len(requests) == 1000
        rss = []
        for i, (kind, kwargs) in enumerate(requests):
            response = http.post("/v1/predict", **kwargs)
            statuses.setdefault(kind, set()).add(response.status_code)
            if response.status_code >= 500:
                server_errors.append((kind, response.status_code, response.text[:200]))
            elif response.status_code != 200:
                body = response.json()  # every error is JSON with a message
                assert body["detail"] and body["code"], (kind, body)
            if i in (199, 999):
                rss.append(_rss_mib(server.pid))
        assert not server_errors, server_errors[:10]
        assert http.get("/health").status_code == 200
        ok = http.post("/v1/predict", files={"image": ("a.jpg", jpeg_bytes(synthetic_lesion()),
                                                       "image/jpeg")})
        assert ok.status_code == 200
    # every kind was refused (or, for valid odd images, answered) with the right family
    assert statuses["oversized"] == {413}
    assert statuses["huge png header"] <= {413, 415, 422} and 413 in statuses["huge png header"]
    assert statuses["huge jpeg header"] <= {413, 422}
    assert statuses["empty"] == {422} and statuses["raw body"] == {415}
    assert statuses["wrong content type"] == {200} and statuses["text named .jpg"] == {415}
    assert 200 in statuses["odd image"]
    growth = rss[1] - rss[0]
    print(f"server RSS after 200 requests {rss[0]:.0f} MiB, after 1000 {rss[1]:.0f} MiB "
          f"(growth {growth:+.0f} MiB); statuses {json.dumps({k: sorted(v) for k, v in statuses.items()})}")
    assert growth < 64, rss


def test_real_server_terminates_cleanly(model_dir, tmp_path):
    """ONNX backend, default (info) logging: the access log names requests, never uploads."""
    with ServerProcess(model_dir, "--no-ood", "--backend", "onnx", "--threads", "1", cwd=tmp_path) as proc:
        with httpx.Client(base_url=proc.url, timeout=60) as http:
            body = http.post("/v1/predict", files={"image": (
                "jane_doe_back.png", png_bytes(synthetic_lesion()), "image/png")}).json()
            assert body["model"]["backend"] == "onnx"
            assert http.post("/v1/predict", files={"image": (
                "jane_doe_arm.jpg", b"SECRET-NOT-AN-IMAGE", "image/jpeg")}).status_code == 415
        proc.process.send_signal(signal.SIGINT)
        assert proc.process.wait(timeout=30) == 0
    log = proc.log.decode(errors="replace")
    assert "POST /v1/predict" in log  # the access log is on ...
    assert "jane_doe" not in log and "SECRET" not in log  # ... but names and bytes stay out
    assert (model_dir / "model.onnx").is_file()  # exported once, before serving
    assert list(tmp_path.iterdir()) == []


def test_worker_factory_reads_its_settings_from_the_environment(model_dir, monkeypatch):
    """``--workers N`` starts uvicorn with this factory; the settings travel as JSON."""
    config = ServiceConfig(str(model_dir), max_upload_mb=0.5, top_k=2, ood=False)
    monkeypatch.setenv(ENV_CONFIG, config.to_env())
    with TestClient(app_from_env()) as client:
        body = client.post("/v1/predict", files={"image": (
            "a.jpg", jpeg_bytes(synthetic_lesion()), "image/jpeg")}).json()
        assert len(body["top_k"]) == 2  # the server's default
        big = client.post("/v1/predict", files={"image": ("a.jpg", b"\xff" * 600_000,
                                                          "image/jpeg")})
        assert big.status_code == 413
    monkeypatch.delenv(ENV_CONFIG)
    with pytest.raises(Exception, match=ENV_CONFIG):
        app_from_env()

"""Issue 24, what is decided before or beside serving: a model whose OOD screen is missing,
corrupt or stale refuses to start (``--no-ood`` aside), a public address needs a token, a
config.json that does not match the weights is one line, a killed export leaves no temporary
file, readiness waits for a warm-up prediction, a full prediction queue answers 503, an
oversized PNG text chunk is unreadable (not "too large"), and the OOD screen's results are
counted. The limits against a running server: tests/test_serving_limits.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from dermlearn.cli import main
from dermlearn.errors import DermlearnError
from dermlearn.serving.app import create_app

from serving_fixtures import (
    free_port,
    jpeg_bytes,
    make_tiny_model,
    png_bytes,
    synthetic_lesion,
)

TOKEN = "t0ken-for-the-tests-0123456789"


# -- defect 3: the OOD screen fails closed ----------------------------------------------------
def test_corrupt_ood_statistics_refuse_to_start(corrupt_ood_dir, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dermlearn.cli", "serve", str(corrupt_ood_dir), "--port", str(port),
         "--backend", "torch", "--threads", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            try:  # today's main starts and serves without its screen: fail fast
                answered = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
                pytest.fail(f"serve started without its OOD screen ({answered})")
            except httpx.HTTPError:
                time.sleep(0.3)
    finally:
        if process.poll() is None:
            process.kill()
        out = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == 2, out
    assert "refusing to serve without the out-of-distribution screen" in out, out
    assert "unreadable OOD statistics" in out and "--no-ood" in out
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 3, out


def test_missing_or_stale_ood_statistics_refuse_too(ood_model_dir, tmp_path):
    bare = make_tiny_model(tmp_path / "bare", image_size=64)
    with pytest.raises(DermlearnError, match="no OOD statistics.*--no-ood"):
        create_app(bare)
    stale = tmp_path / "stale"
    shutil.copytree(ood_model_dir, stale)
    info = json.loads((stale / "ood.json").read_text())
    info["feature_digest"] = "sha256:0000000000000000"
    (stale / "ood.json").write_text(json.dumps(info))
    with pytest.raises(DermlearnError, match="fitted for other weights"):
        create_app(stale)


def test_workers_refuse_once_before_starting(corrupt_ood_dir, monkeypatch):
    import uvicorn

    from dermlearn.serving.server import serve

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(a))
    with pytest.raises(DermlearnError, match="out-of-distribution screen"):
        serve(corrupt_ood_dir, backend="torch", workers=2)
    assert serve(corrupt_ood_dir, backend="torch", workers=2, ood=False) == 0
    assert started == [("dermlearn.serving.app:app_from_env",)]


# -- access control ---------------------------------------------------------------------------
def test_token_file_in_process(ood_model_dir, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789abcdef\n")
    token_file.chmod(0o600)
    with TestClient(create_app(ood_model_dir, token_file=str(token_file))) as client:
        assert client.get("/v1/model").status_code == 401
        ok = client.get("/v1/model", headers={"Authorization": "bearer from-a-file-0123456789abcdef"})
        assert ok.status_code == 200
    token_file.write_text("short")
    with pytest.raises(DermlearnError, match="at least 16 characters"):
        create_app(ood_model_dir, token_file=str(token_file))


def test_public_address_needs_a_token_or_insecure(ood_model_dir, monkeypatch, capsys):
    import uvicorn

    monkeypatch.delenv("DERMLEARN_TOKEN", raising=False)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    monkeypatch.setattr("dermlearn.serving.app.create_app", lambda config: config)
    assert main(["serve", str(ood_model_dir), "--host", "0.0.0.0"]) == 2
    said = capsys.readouterr().err
    assert "without an access token" in said and "--token-file" in said and "--insecure" in said
    assert started == []
    assert main(["serve", str(ood_model_dir), "--host", "0.0.0.0", "--insecure",
                 "--backend", "torch"]) == 0
    assert main(["serve", str(ood_model_dir), "--host", "::1", "--backend", "torch"]) == 0
    monkeypatch.setenv("DERMLEARN_TOKEN", TOKEN)
    assert main(["serve", str(ood_model_dir), "--host", "0.0.0.0", "--backend", "torch"]) == 0
    assert len(started) == 3
    kw = started[-1]  # uvicorn's own limits are set
    assert kw["timeout_keep_alive"] == 5.0 and kw["limit_concurrency"] == 256
    assert kw["h11_max_incomplete_event_size"] == 16 * 1024


# -- defect 5: clear answers, nothing left behind ----------------------------------------------
def _png_with_text_chunk(megabytes: int) -> bytes:
    """A valid 100x100 PNG carrying a zTXt chunk that inflates to ``megabytes`` MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                        zlib.crc32(kind + data))
    png = png_bytes(synthetic_lesion(size=100))
    text = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * megabytes * 10**6, 9))
    return png[:33] + text + png[33:]


def test_oversized_text_chunk_is_unreadable_not_too_large(ood_model_dir):
    data = _png_with_text_chunk(50)
    assert len(data) < 100_000
    with TestClient(create_app(ood_model_dir)) as client:
        response = client.post("/v1/predict", files={"image": ("a.png", data, "image/png")})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unreadable_image"


def test_config_that_does_not_match_the_weights_is_one_line(ood_model_dir, tmp_path, capsys,
                                                            monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    broken = tmp_path / "model"
    shutil.copytree(ood_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["classes"] = [*config["classes"], "scc"]
    (broken / "config.json").write_text(json.dumps(config))
    for backend in ("torch", "onnx"):
        assert main(["serve", str(broken), "--backend", backend]) == 2
        err = capsys.readouterr().err
        assert "config.json does not match the saved weights" in err, err
        assert "head.weight: [7, 1280] in the weights, [8, 1280] from config.json" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_export_killed_midway_leaves_no_temporary_file(ood_model_dir, tmp_path):
    out = tmp_path / "model.onnx"
    process = subprocess.Popen([sys.executable, "-m", "dermlearn.cli", "export", str(ood_model_dir),
                                "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    seen = []
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline and not seen:
        seen = list(tmp_path.glob(".model.onnx.*.tmp"))
        time.sleep(0.005)
    assert seen, "the export finished before its temporary file was seen"
    process.send_signal(signal.SIGTERM)
    log = process.communicate(timeout=120)[0].decode(errors="replace")
    assert process.returncode in (143, -signal.SIGTERM), log
    assert list(tmp_path.glob(".model.onnx.*.tmp")) == [], log


def test_export_removes_temporaries_a_kill_9_left(ood_model_dir, tmp_path, monkeypatch, capsys):
    from dermlearn.inference import onnx_export

    old, young = tmp_path / ".model.onnx.0a1b2c3d.tmp", tmp_path / ".model.onnx.ffffffff.tmp"
    old.write_bytes(b"half an export")
    young.write_bytes(b"a running export")
    os.utime(old, (time.time() - 2 * 3600,) * 2)

    def fail(*args, **kwargs):
        raise DermlearnError("stop here")

    monkeypatch.setattr(onnx_export, "export_onnx", fail)
    assert main(["export", str(ood_model_dir), "--out", str(tmp_path / "model.onnx")]) == 2
    assert not old.exists() and young.exists()
    assert "removed 1 temporary file(s)" in capsys.readouterr().out


# -- readiness, the queue, the OOD screen's counts ---------------------------------------------
def test_ready_only_after_the_warm_up(ood_model_dir, monkeypatch):
    from dermlearn.serving import app as app_module, health

    gate = threading.Event()
    real = health.warm_up
    monkeypatch.setattr(app_module, "warm_up", lambda *a: (gate.wait(30), real(*a)))
    with TestClient(create_app(ood_model_dir)) as client:
        assert client.get("/health/live").status_code == 200
        starting = client.get("/health/ready")
        assert starting.status_code == 503 and starting.json()["state"] == "starting"
        assert client.get("/health").status_code == 503
        gate.set()
        for _ in range(100):
            if client.get("/health/ready").status_code == 200:
                break
            time.sleep(0.05)
        ready = client.get("/health/ready").json()
        assert ready["ready"] is True and ready["ood"] == "on" and ready["warm_up_ms"] > 0
    monkeypatch.setattr(health, "warm_up_image", lambda: b"not an image")
    monkeypatch.setattr(app_module, "warm_up", real)
    with TestClient(create_app(ood_model_dir)) as client:
        for _ in range(100):
            failed = client.get("/health/ready")
            if failed.json()["state"] != "starting":
                break
            time.sleep(0.05)
        assert failed.status_code == 503 and failed.json()["state"] == "failed"
        assert "warm-up prediction failed" in failed.json()["reason"]


def test_full_prediction_queue_gets_503(ood_model_dir):
    app = create_app(ood_model_dir, max_queue=1)
    service = app.state.service
    gate, entered = threading.Event(), threading.Event()
    real = service.decode

    def slow_decode(data):
        entered.set()
        gate.wait(30)
        return real(data)

    photo = jpeg_bytes(synthetic_lesion())
    with TestClient(app) as client:
        for _ in range(200):  # the warm-up decodes too: let it finish first
            if client.get("/health/ready").status_code == 200:
                break
            time.sleep(0.05)
        service.decode = slow_decode
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=client.post(
            "/v1/predict", files={"image": ("a.jpg", photo, "image/jpeg")})))
        worker.start()
        assert entered.wait(30)
        second = client.post("/v1/predict", files={"image": ("a.jpg", photo, "image/jpeg")})
        gate.set()
        worker.join(30)
        assert first["r"].status_code == 200
        assert second.status_code == 503 and second.json()["code"] == "queue_full"
        assert second.headers["retry-after"] == "1"
        metrics = client.get("/metrics").text
    assert 'dermlearn_images_refused_total{reason="queue_full"} 1.0' in metrics


def test_ood_screen_results_are_counted(ood_model_dir):
    with TestClient(create_app(ood_model_dir)) as client:
        client.post("/v1/predict", files={"image": ("a.jpg", jpeg_bytes(synthetic_lesion(seed=3)),
                                                    "image/jpeg")})
        checker = np.zeros((120, 160, 3), np.uint8)
        checker[::2, ::2] = 255  # a checkerboard: nothing like the fitted images
        checker = Image.fromarray(checker)
        flagged = client.post("/v1/predict", files={"image": ("c.png", png_bytes(checker),
                                                              "image/png")}).json()
        metrics = client.get("/metrics").text
    counts = {s.labels["result"]: s.value for f in text_string_to_metric_families(metrics)
              if f.name == "dermlearn_ood_screen" for s in f.samples
              if s.name.endswith("_total")}
    assert flagged["ood"]["flag"] is True
    assert counts.get("flagged", 0) >= 1 and sum(counts.values()) == 2, counts
    assert set(counts) <= {"flagged", "passed"}  # the screen is on: never "off"

"""The web service's API through FastAPI's TestClient: results, errors, hardening, privacy."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import stat
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from dermlearn.inference.ood import fit_ood
from dermlearn.inference.predictor import Predictor
from dermlearn.serving.app import STATIC_DIR, create_app
from dermlearn.serving.batching import MicroBatcher

from conftest import BAD
from serving_fixtures import (
    HAM7,
    jpeg_bytes,
    lesion_paths,
    make_tiny_model,
    png_bytes,
    synthetic_lesion,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("serving") / "run" / "model", temperature=1.5)


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir, max_upload_mb=2, ood=False)) as c:
        yield c


@pytest.fixture(scope="module")
def ood_model_dir(model_dir, tmp_path_factory) -> Path:
    """The same model with OOD statistics fitted on synthetic lesion images."""
    out = tmp_path_factory.mktemp("with-ood") / "model"
    shutil.copytree(model_dir, out)
    folder = tmp_path_factory.mktemp("fit-images")
    paths = []
    for i in range(16):
        path = folder / f"{i}.png"
        synthetic_lesion(seed=i).save(path)
        paths.append(path)
    fit_ood(Predictor.load(out), paths, folds=4).save(out)
    return out


def photo() -> bytes:
    real = lesion_paths(1)
    return real[0].read_bytes() if real else jpeg_bytes(synthetic_lesion())


def post(client, data: bytes, *, name="photo.jpg", ctype="image/jpeg", field="image", query=""):
    return client.post(f"/v1/predict{query}", files={field: (name, data, ctype)})


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if code:
        assert body["code"] == code, body
    return body


# -- results ---------------------------------------------------------------------------------
def test_prediction_document(client, model_dir):
    response = post(client, photo())
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    probs = body["probabilities"]
    assert list(probs) == HAM7 and abs(sum(probs.values()) - 1) < 1e-6
    top = body["top_k"]
    assert len(top) == 3 and [t["probability"] for t in top] == sorted(
        (t["probability"] for t in top), reverse=True)
    assert top[0]["id"] == max(probs, key=probs.get) and top[0]["name"]
    assert set(body["levels"]) == {"malignant_vs_benign", "melanoma_vs_rest", "esteva3"}
    for groups in body["levels"].values():
        assert abs(sum(groups.values()) - 1) < 1e-6
    risk = body["malignancy_risk"]
    assert risk["probability"] == pytest.approx(body["levels"]["malignant_vs_benign"]["malignant"])
    assert risk["probability"] == pytest.approx(probs["mel"] + probs["bcc"] + probs["akiec"])
    assert risk["temperature"] == 1.5 and risk["calibrated"] is True
    assert body["levels"]["melanoma_vs_rest"]["melanoma"] == pytest.approx(probs["mel"])
    assert body["ood"] == {"available": False, "flag": None, "reason": body["ood"]["reason"],
                           **{k: None for k in ("score", "threshold", "method", "percentile",
                                                "layer")}}
    assert body["model"]["id"] == "run" and body["model"]["version"].startswith("sha256:")
    assert body["model"]["backend"] == "torch" and "explanation" not in body or \
        body["explanation"] is None
    assert "not a diagnosis" in body["disclaimer"]
    assert body["metadata"] == {"fused": False, "age": None, "sex": None, "site": None,
                                "note": None}
    # the same probabilities as the batch predictor (temperature applied)
    predictor = Predictor.load(model_dir)
    image = Image.open(io.BytesIO(photo())).convert("RGB")
    expected = predictor.predict_images([image])[0]
    np.testing.assert_allclose(list(probs.values()), expected, atol=1e-5)


def test_top_k_parameter(client):
    assert len(post(client, photo(), query="?top_k=7").json()["top_k"]) == 7
    assert_error(post(client, photo(), query="?top_k=0"), 422, "invalid_request")


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_explanation_overlay(client, method):
    body = post(client, photo(), query=f"?explain={method}").json()
    explanation = body["explanation"]
    assert explanation["method"] == method and explanation["target"] == body["top_k"][0]["id"]
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["png_base64"])))
    assert overlay.format == "PNG" and overlay.size == (explanation["width"],
                                                        explanation["height"])
    ratio = body["image"]["width"] / body["image"]["height"]
    assert abs(overlay.width / overlay.height - ratio) < 0.02 and max(overlay.size) <= 640


def test_unknown_explain_method(client):
    assert_error(post(client, photo(), query="?explain=lime"), 422, "invalid_request")


def test_ood_field_with_statistics(ood_model_dir):
    with TestClient(create_app(ood_model_dir)) as c:
        body = post(c, jpeg_bytes(synthetic_lesion(seed=99))).json()
        ood = body["ood"]
        assert ood["available"] is True and isinstance(ood["flag"], bool)
        assert ood["score"] > 0 and ood["threshold"] > 0 and "mahalanobis" in ood["method"]
        cat = np.zeros((120, 160, 3), np.uint8)
        cat[::2, ::2] = 255  # a checkerboard: nothing like the fitted images
        assert post(c, png_bytes(Image.fromarray(cat)), ctype="image/png").json()["ood"]["flag"]
        assert c.get("/v1/model").json()["ood"]["available"] is True
        assert c.get("/health").json()["ood_available"] is True


def test_onnx_backend_matches_torch(client, model_dir):
    data = photo()
    torch_probs = post(client, data).json()["probabilities"]
    with TestClient(create_app(model_dir, backend="onnx", ood=False)) as c:
        body = post(c, data).json()
    assert body["model"]["backend"] == "onnx"
    np.testing.assert_allclose(list(body["probabilities"].values()), list(torch_probs.values()),
                               atol=1e-4)
    assert (model_dir / "model.onnx").is_file()  # exported on the fly, cached in the model dir


SITES = ["back", "face", "lower extremity"]


@pytest.fixture(scope="module")
def fusion_dir(tmp_path_factory) -> Path:
    """A model that fuses age, sex and site (random metadata branch: they move the output)."""
    return make_tiny_model(tmp_path_factory.mktemp("fusion") / "model", sites=SITES)


def post_with(client, data: bytes, fields: dict, query: str = ""):
    return client.post(f"/v1/predict{query}", files={"image": ("p.jpg", data, "image/jpeg")},
                       data=fields)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_patient_fields_reach_a_fusion_model(fusion_dir, backend):
    predictor = Predictor.load(fusion_dir)
    data = photo()
    batch = predictor.transform(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    encode = predictor.metadata_encoder.encode
    with TestClient(create_app(fusion_dir, backend=backend, ood=False)) as c:
        assert c.get("/v1/model").json()["patient_inputs"]["sites"] == SITES
        body = post_with(c, data, {"age": "70", "sex": "Male", "site": "Back"},
                         query="?explain=gradcam").json()
        assert body["metadata"] == {"fused": True, "age": 70.0, "sex": "male", "site": "Back",
                                    "note": None}
        given = predictor.predict_batch(batch, torch.from_numpy(encode(70.0, "male", "back")[None]))
        np.testing.assert_allclose(list(body["probabilities"].values()), given[0], atol=1e-4)
        assert body["explanation"]["target"] == body["top_k"][0]["id"]
        plain = post(c, data).json()
        assert plain["metadata"]["fused"] is True and plain["metadata"]["age"] is None
        unknown = predictor.predict_batch(batch)  # age, sex and site unknown
        np.testing.assert_allclose(list(plain["probabilities"].values()), unknown[0], atol=1e-4)
        assert np.abs(given - unknown).max() > 1e-4
        other = post_with(c, data, {"site": "elbow", "sex": "unknown"}).json()["metadata"]
        assert other["sex"] is None and "not one of the training sites" in other["note"]
        for fields, code in [({"age": "old"}, "bad_metadata"), ({"age": "-3"}, "bad_metadata"),
                             ({"age": "nan"}, "bad_metadata"), ({"sex": "x"}, "bad_metadata"),
                             ({"site": "a" * 300}, "bad_field")]:
            assert_error(post_with(c, data, fields), 422, code)


def test_patient_fields_on_an_image_only_model(client):
    body = post_with(client, photo(), {"age": "40"}).json()
    assert body["metadata"]["fused"] is False and "does not use" in body["metadata"]["note"]
    assert client.get("/v1/model").json()["patient_inputs"] is None


# -- errors: 4xx JSON, never 5xx ---------------------------------------------------------------
@pytest.mark.parametrize("name, status, code", [
    ("text_named.jpg", 415, "unsupported_image"),
    ("corrupt.jpg", 415, "unsupported_image"),  # JPEG magic, then garbage: not recognised
    ("truncated.jpg", 422, "unreadable_image"),
    ("bomb.png", 413, "image_too_large"),
])
def test_broken_files_are_refused(client, name, status, code):
    assert_error(post(client, (BAD / name).read_bytes()), status, code)


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width x height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (3 * width + 1) * 2)) + chunk(b"IEND", b""))


def test_decompression_bomb_20000_squared(client):
    data = png_header_bomb(20_000, 20_000)
    assert len(data) < 1000
    body = assert_error(post(client, data, name="ok.png", ctype="image/png"), 413,
                        "image_too_large")
    assert "too large" in body["detail"]


def test_pixel_limit_is_configurable(model_dir):
    with TestClient(create_app(model_dir, max_pixels=100 * 100, ood=False)) as c:
        assert_error(post(c, png_bytes(synthetic_lesion(size=160)), ctype="image/png"), 413,
                     "image_too_large")
        assert post(c, png_bytes(synthetic_lesion(size=96)), ctype="image/png").status_code == 200


def test_upload_byte_limit(client):
    big = b"\xff\xd8\xff" + os.urandom(2 * 2**20 + 10)
    assert_error(post(client, big), 413, "upload_too_large")
    # a lying Content-Length is refused before the body is read
    response = client.post("/v1/predict", content=b"x" * 10, headers={
        "content-type": "multipart/form-data; boundary=abc", "content-length": str(10**9)})
    assert response.status_code in (400, 413), response.text


@pytest.mark.parametrize("kwargs, status, code", [
    ({"content": b"\xff\xd8\xff", "headers": {"content-type": "image/jpeg"}}, 415, "not_multipart"),
    ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "not_multipart"),
    ({"content": b"", "headers": {}}, 415, "not_multipart"),
    ({"content": b"garbage", "headers": {"content-type": "multipart/form-data"}}, 400,
     "malformed_multipart"),
    ({"content": b"--abc\r\nno headers end", "headers": {
        "content-type": "multipart/form-data; boundary=abc"}}, 400, "malformed_multipart"),
    ({"content": b'--abc\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"'
                 b"\r\n\r\n\xff\xd8\xff unterminated", "headers": {
        "content-type": "multipart/form-data; boundary=abc"}}, 422, "missing_file"),
])
def test_malformed_requests(client, kwargs, status, code):
    assert_error(client.post("/v1/predict", **kwargs), status, code)


def test_missing_or_empty_field(client):
    assert_error(post(client, photo(), field="file"), 422, "missing_file")
    assert_error(post(client, b""), 422, "empty_upload")
    gif = io.BytesIO()
    synthetic_lesion().save(gif, format="GIF")
    assert_error(post(client, gif.getvalue(), name="x.jpg"), 415, "unsupported_image")


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/predict"), 405)


# -- decoding: sniffed, oriented, converted ------------------------------------------------
def test_content_is_sniffed_not_named(client):
    png = png_bytes(synthetic_lesion())
    assert post(client, png, name="notes.txt", ctype="text/plain").status_code == 200
    assert post(client, png, name="photo.jpg", ctype="application/octet-stream").status_code == 200


@pytest.mark.parametrize("name", ["gray16.png", "rgba.png", "cmyk.jpg", "grayscale.jpg",
                                  "good.jpg"])
def test_image_modes_are_converted(client, name):
    response = post(client, (BAD / name).read_bytes())
    assert response.status_code == 200, response.text


def test_exif_orientation_is_applied(client):
    raw = Image.open(BAD / "exif_rotated.jpg")
    orientation = raw.getexif().get(0x0112)
    assert orientation in (5, 6, 7, 8)  # a 90-degree turn: width and height swap
    body = post(client, (BAD / "exif_rotated.jpg").read_bytes()).json()
    assert (body["image"]["width"], body["image"]["height"]) == (raw.height, raw.width)


# -- privacy: nothing written unless --keep-uploads -------------------------------------------
def _snapshot(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")} if folder.exists() else set()


def test_uploads_never_touch_disk(model_dir, tmp_path, monkeypatch):
    """A > 1 MB upload (Starlette would spool it to a temp file) leaves no file anywhere we
    watch: the working directory, the temp dir, the model dir."""
    monkeypatch.chdir(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8))
    data = png_bytes(image)
    assert len(data) > 1_100_000
    watched = [tmp_path, Path(tempfile.gettempdir()), model_dir]
    with TestClient(create_app(model_dir, max_upload_mb=5, ood=False)) as c:
        before = [_snapshot(f) for f in watched]
        for _ in range(3):
            assert post(c, data, name="patient_jane_doe.png").status_code == 200
        after = [_snapshot(f) for f in watched]
    new = [sorted(b - a) for a, b in zip(before, after)]
    # other processes may write to the shared temp dir: only files with our bytes count
    ours = [p for files in new for p in files
            if Path(p).is_file() and Path(p).stat().st_size >= len(data) // 2
            and data[:4096] in Path(p).read_bytes()]
    assert not new[0] and not new[2] and not ours, new


def test_keep_uploads_saves_them(model_dir, tmp_path):
    keep = tmp_path / "kept"
    data = photo()
    with TestClient(create_app(model_dir, keep_uploads=str(keep), ood=False)) as c:
        assert post(c, data, name="patient_jane_doe.jpg").status_code == 200
        assert post(c, b"not an image").status_code == 415
    files = sorted(keep.iterdir())
    assert len(files) == 2 and files[0].read_bytes() in (data, b"not an image")
    assert any(f.read_bytes() == data and f.suffix == ".jpg" for f in files)
    assert not any("jane" in f.name for f in files)
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


# -- model card, health, page, docs ---------------------------------------------------------
def test_model_card(client, model_dir):
    card = client.get("/v1/model").json()
    assert [c["id"] for c in card["classes"]] == HAM7 and card["classes"][4]["name"] == "Melanoma"
    assert card["levels"]["malignant_vs_benign"] == ["malignant", "benign"]
    assert card["training_data"]["source"] == "ham10000"  # no server paths
    assert card["temperature"] == 1.5 and card["preprocess"]["input_size"] == [3, 96, 96]
    assert "not a diagnosis" in card["intended_use"].lower() or "not a diagnosis" in \
        " ".join(card["limitations"]).lower()
    assert len(card["limitations"]) >= 5 and card["ood"]["available"] is False
    assert card["validation"] is None


def test_model_card_validation_sources(model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "model")
    metrics = {"validation": "lesion-grouped hold-out", "n": 100, "accuracy": 0.8,
               "balanced_accuracy": 0.7, "auc_macro": 0.9, "auc_macro_ci": [0.85, 0.94],
               "per_class": {"mel": {"auc": 0.91, "sensitivity": 0.6}},
               "levels": {"melanoma_vs_rest": {"auc": 0.91}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    with TestClient(create_app(run / "model", ood=False)) as c:
        validation = c.get("/v1/model").json()["validation"]
    assert validation["source"] == "metrics.json" and validation["auc_macro_ci"] == [0.85, 0.94]
    assert validation["per_class_auc"] == {"mel": 0.91}
    assert validation["melanoma_vs_rest_auc"] == 0.91
    config = json.loads((run / "model" / "config.json").read_text())
    config["validation"] = {"balanced_accuracy": {"value": 0.71, "ci": [0.68, 0.74]}}
    (run / "model" / "config.json").write_text(json.dumps(config))
    with TestClient(create_app(run / "model", ood=False)) as c:
        validation = c.get("/v1/model").json()["validation"]
    assert validation == {"source": "model config",
                          "balanced_accuracy": {"value": 0.71, "ci": [0.68, 0.74]}}


def test_health(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "torch"
    assert health["batching"]["items"] >= 1


def test_page_and_docs_are_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    for asset in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / asset).read_text()
        assert "http://" not in text and "https://" not in text, asset
        if asset != "index.html":
            assert client.get(f"/static/{asset}").status_code == 200
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "cdn." not in html and "fonts.googleapis" not in html
        for ref in ("/docs-assets/swagger-ui-bundle.js",) if path == "/docs" else \
                ("/docs-assets/redoc.standalone.js",):
            assert ref in html and client.get(ref).status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"


# -- micro-batching ---------------------------------------------------------------------------
def test_micro_batcher_gathers_concurrent_requests():
    calls = []

    def run(items):
        calls.append(len(items))
        time.sleep(0.01)
        return [x * 2 for x in items]

    batcher = MicroBatcher(run, max_batch=8, max_wait_ms=50).start()
    barrier = threading.Barrier(8)
    results = {}

    def client_thread(i):
        with batcher.reserve() as slot:
            barrier.wait()
            time.sleep(0.002 * i)  # "decoding" takes a little while, differently per request
            future = slot.submit(i)
        results[i] = future.result(timeout=5)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: 2 * i for i in range(8)}
    assert max(calls) >= 4 and sum(calls) == 8, calls


def test_micro_batcher_lone_request_does_not_wait():
    batcher = MicroBatcher(lambda xs: xs, max_batch=16, max_wait_ms=500).start()
    t0 = time.perf_counter()
    with batcher.reserve() as slot:
        future = slot.submit(1)
    assert future.result(timeout=5) == 1 and time.perf_counter() - t0 < 0.25
    batcher.close()


def test_micro_batcher_survives_errors():
    def run(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher(run, max_batch=4, max_wait_ms=0).start()
    with pytest.raises(ValueError, match="boom"):
        batcher.submit("bad").result(timeout=5)
    assert batcher.submit("good").result(timeout=5) == "good"
    batcher.close()
    with pytest.raises(RuntimeError):
        batcher.submit("late")


# -- property: arbitrary bytes, names and content types never give a 5xx -------------------
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=4096),
                      st.builds(lambda cut, junk: (BAD / "good.jpg").read_bytes()[:cut] + junk,
                                st.integers(0, 4000), st.binary(max_size=64))),
       name=st.text(max_size=40), ctype=st.sampled_from(
           ["image/jpeg", "image/png", "text/plain", "application/octet-stream", ""]))
def test_arbitrary_uploads_never_fail_the_server(client, data, name, ctype):
    response = post(client, data, name=name, ctype=ctype)
    assert response.status_code < 500, response.text
    assert response.status_code == 200 or response.json()["code"]

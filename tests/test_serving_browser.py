"""The page at ``/`` in headless Chromium (Playwright) against a real uvicorn server: upload a
real dermoscopy photo, see the probability bars, the risk and the heatmap overlay render.

Screenshots go to ``$DERMLEARN_SCREENSHOT_DIR`` (default: the test's tmp_path). To refresh the
README's picture with a trained model::

    DERMLEARN_SERVICE_MODEL=runs/ham/model DERMLEARN_SERVICE_PHOTO=some-validation-photo.jpg \\
    DERMLEARN_SERVICE_SCREENSHOT=docs/img/service.png \\
        .venv/bin/python -m pytest tests/test_serving_browser.py -k upload
"""
from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest

from browser import BROKEN_IMAGES_JS, browser_page
from serving_fixtures import (
    ServerProcess,
    lesion_paths,
    make_tiny_model,
    png_bytes,
    synthetic_lesion,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extras)")
    model = os.environ.get("DERMLEARN_SERVICE_MODEL")
    model_dir = Path(model).resolve() if model else make_tiny_model(
        tmp_path_factory.mktemp("browser") / "demo-run" / "model", image_size=128)
    cwd = tmp_path_factory.mktemp("browser-cwd")
    screen = [] if (model_dir / "ood.json").is_file() else ["--no-ood"]  # the tiny model has none
    with ServerProcess(model_dir, "--backend", "onnx", "--log-level", "warning", *screen,
                       cwd=cwd) as proc:
        yield proc


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DERMLEARN_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_upload_shows_bars_risk_and_heatmap(server, tmp_path):
    photo = os.environ.get("DERMLEARN_SERVICE_PHOTO")
    photos = [Path(photo)] if photo else lesion_paths(1, offset=3)  # PH2 IMD006
    if not photos:
        pytest.skip("PH2 images not found in ../shared/data/ph2")
    from playwright.sync_api import expect

    with browser_page(width=1280, height=960) as page:
        foreign = []
        page.on("request", lambda r: None if r.url.startswith((server.url, "data:", "blob:"))
                else foreign.append(r.url))
        page.goto(server.url + "/")
        # expect() polls from Python (a polled wait_for_function string needs the eval that the
        # page's CSP forbids)
        expect(page.locator("#model-line")).to_have_text(re.compile(r"^model "))
        assert page.locator("#limitations li").count() >= 5
        page.set_input_files("#file-input", str(photos[0]))
        page.wait_for_selector("#bars .bar", timeout=120_000)
        page.wait_for_function("() => { const img = document.getElementById('heatmap-img');"
                               " return img.complete && img.naturalWidth > 0 &&"
                               " !document.getElementById('heatmap').hidden; }",
                               timeout=120_000)
        bars = page.locator("#bars .bar")
        n_classes = len(page.evaluate("fetch('/v1/model').then(r => r.json())"
                                      ".then(c => c.classes)"))
        assert bars.count() == n_classes
        widths = page.eval_on_selector_all(
            "#bars .fill", "els => els.map(e => parseFloat(e.style.width))")
        assert widths == sorted(widths, reverse=True) and abs(sum(widths) - 100) < 1.0
        top, track = (page.locator(f"#bars .bar >> nth=0 >> {sel}").bounding_box()
                      for sel in (".fill", ".track"))
        assert top["width"] == pytest.approx(track["width"] * widths[0] / 100, abs=2)
        assert page.locator("#risk").inner_text().endswith("%")
        assert page.locator("#ood").is_visible()
        assert page.locator("#levels .level").count() >= 2
        assert page.locator("#heatmap-caption").inner_text() == "gradcam heatmap"
        assert page.evaluate(BROKEN_IMAGES_JS) == []
        assert page.locator("#error").is_hidden()
        assert page.locator("#patient").is_hidden()  # an image-only model asks for nothing
        shot = _screenshot_dir(tmp_path) / "service.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        target = os.environ.get("DERMLEARN_SERVICE_SCREENSHOT")
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)
        assert foreign == []  # nothing fetched from anywhere but this server


def test_drop_and_error_message(server, tmp_path):
    png = base64.b64encode(png_bytes(synthetic_lesion(size=100))).decode()
    text = base64.b64encode(b"not a photo").decode()
    make_drop = """([data, name, type]) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type }));
        return dt; }"""
    with browser_page() as page:
        page.goto(server.url + "/")
        page.select_option("#explain-method", "")  # no heatmap
        transfer = page.evaluate_handle(make_drop, [png, "lesion.png", "image/png"])
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        page.wait_for_selector("#bars .bar", timeout=60_000)
        assert page.locator("#heatmap").is_hidden()
        transfer = page.evaluate_handle(make_drop, [text, "mole.jpg", "image/jpeg"])
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        page.wait_for_selector("#error:not([hidden])", timeout=60_000)
        assert "not a recognised image format" in page.locator("#error").inner_text()
        page.screenshot(path=str(_screenshot_dir(tmp_path) / "service-error.png"))


def test_patient_fields_for_a_fusion_model(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extras)")
    sites = ["back", "face", "lower extremity"]
    model_dir = make_tiny_model(tmp_path / "fusion-run" / "model", image_size=96, sites=sites)
    with ServerProcess(model_dir, "--log-level", "warning", "--no-ood", cwd=tmp_path) as server, \
            browser_page() as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#patient:not([hidden])")
        assert page.locator("#patient-site option").count() == len(sites) + 1
        page.fill("#patient-age", "62")
        page.select_option("#patient-sex", "female")
        page.select_option("#patient-site", "face")
        page.select_option("#explain-method", "")
        page.set_input_files("#file-input", files=[{
            "name": "lesion.png", "mimeType": "image/png",
            "buffer": png_bytes(synthetic_lesion(size=120))}])
        page.wait_for_selector("#bars .bar", timeout=60_000)
        assert page.locator("#patient-used").inner_text() == "with age 62, female, face"

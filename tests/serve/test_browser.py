"""The page in a real browser: headless Debian Chromium driven by Playwright against uvicorn."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mpft.serve import ServeSettings, create_app
from tests.kit import image_bytes, require
from tests.serve.conftest import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM.is_file(), f"{CHROMIUM}", "install Debian's chromium (apt-get install -y chromium)")
    from playwright import sync_api  # a dev dependency: missing is an error, not a skip

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_upload_shows_verdict_probability_and_heatmap(browser, tiny_detector, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(image_bytes(48, 40, seed=21))
    app = create_app(lambda: tiny_detector, ServeSettings())
    with live_server(app) as url:
        assert app.state.model.wait(60)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            page.goto(url + "/", wait_until="load")
            page.set_input_files("#file-input", str(image))
            verdict = page.locator("#verdict")
            verdict_re = re.compile(r"^(generated|real|uncertain)$")
            page.wait_for_function(
                "() => ['generated', 'real', 'uncertain']"
                ".includes(document.getElementById('verdict').textContent)",
                timeout=30_000,
            )
            assert verdict_re.match(verdict.inner_text())
            prob = page.locator("#probability").inner_text()
            m = re.fullmatch(r"(\d{1,3}\.\d)%", prob)
            assert m and 0.0 <= float(m.group(1)) <= 100.0, prob
            assert page.locator("#model-id").inner_text() == tiny_detector.model_id
            try:
                import mpft.explain  # noqa: F401
            except ModuleNotFoundError:
                pass
            else:
                page.wait_for_selector("#heatmap-figure:not([hidden])", timeout=30_000)
                natural = page.eval_on_selector("#heatmap", "img => img.naturalWidth")
                assert natural > 0
            assert errors == []
        finally:
            page.close()


def test_page_shows_a_server_error_for_a_non_image(browser, tiny_detector, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is text named .png")
    app = create_app(lambda: tiny_detector, ServeSettings())
    with live_server(app) as url:
        assert app.state.model.wait(60)
        page = browser.new_page()
        try:
            page.goto(url + "/", wait_until="load")
            page.set_input_files("#file-input", str(fake))
            page.wait_for_selector("#error:not([hidden])", timeout=15_000)
            assert "not a supported image" in page.locator("#error").inner_text()
            # no empty result card (with a broken-image preview) above the error
            assert page.locator("#result").is_hidden()
        finally:
            page.close()

"""HTTP behaviour of the service: every status code, limits, no disk, logs, thin-layer results."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from mpft.detector import VERDICTS
from mpft.errors import ConfigError
from mpft.serve import ServeSettings, create_app
from mpft.serve.middleware import ACCESS_LOGGER
from tests.kit import image_bytes, png_bomb
from tests.serve.conftest import FakeDetector

PREDICT = "/api/v1/predict"
EXPLAIN = "/api/v1/explain"
RESULT_KEYS = {"filename", "probability", "verdict", "threshold", "model_id", "error", "notes"}


@contextlib.contextmanager
def ready_client(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
        assert app.state.model.wait(60), app.state.model.error
        yield client


@pytest.fixture
def client(tiny_detector) -> Iterator[TestClient]:
    with ready_client(create_app(lambda: tiny_detector, ServeSettings())) as c:
        yield c


def files(*items: tuple[str, bytes], field: str = "files", ctype: str = "image/png") -> list:
    return [(field, (name, data, ctype)) for name, data in items]


# ---- health and readiness ------------------------------------------------------------------------

def test_healthz_ok_while_model_loading_and_readyz_503_until_loaded():
    gate = threading.Event()
    fake = FakeDetector()

    def slow_loader():
        assert gate.wait(30)
        return fake

    app = create_app(slow_loader, ServeSettings())
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "loading" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        r = c.post(PREDICT, files=files(("a.png", image_bytes())))
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        gate.set()
        assert app.state.model.wait(10)
        r = c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["model_id"] == "fake-model"
        assert fake.max_pixels == ServeSettings().max_pixels  # the app hands its limit to the decoder
        assert fake.batches == [1, 1, 4]  # warm-up, then timed batches of 1 and 4, before ready


def test_readyz_reports_a_failed_load():
    def broken():
        raise RuntimeError("weights are gone")

    app = create_app(broken, ServeSettings())
    with TestClient(app) as c:
        app.state.model.wait(10)
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "weights are gone" in r.json()["detail"]
        assert c.get("/healthz").json() == {"status": "ok"}


# ---- predict -------------------------------------------------------------------------------------

def test_predict_single_file(client, tiny_detector):
    img = image_bytes(seed=1)
    r = client.post(PREDICT, files=files(("cat.png", img)))
    assert r.status_code == 200
    body = r.json()
    [res] = body["results"]
    assert set(res) == RESULT_KEYS
    assert res["filename"] == "cat.png"
    assert 0.0 <= res["probability"] <= 1.0
    assert res["verdict"] in VERDICTS and res["verdict"] != "error"
    assert res["error"] is None
    assert res["model_id"] == body["model_id"] == tiny_detector.model_id
    # thin layer: exactly the detector's own answer
    [ref] = tiny_detector.predict(img)
    assert res["probability"] == pytest.approx(ref.probability, abs=1e-6)
    assert res["verdict"] == ref.verdict and res["threshold"] == ref.threshold


def test_predict_several_files_keeps_order_and_reports_a_truncated_one(client, tiny_detector):
    a, b = image_bytes(seed=2), image_bytes(50, 20, seed=3, fmt="JPEG")
    truncated = image_bytes(64, 64, seed=4)[:200]
    r = client.post(PREDICT, files=files(("a.png", a), ("cut.png", truncated), ("b.jpg", b)))
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["filename"] for x in res] == ["a.png", "cut.png", "b.jpg"]
    refs = tiny_detector.predict([a, b])
    assert res[0]["probability"] == pytest.approx(refs[0].probability, abs=1e-6)
    assert res[2]["probability"] == pytest.approx(refs[1].probability, abs=1e-6)
    assert res[1]["verdict"] == "error" and res[1]["probability"] is None
    assert "truncated" in res[1]["error"]


def test_413_when_the_body_exceeds_the_cap(tiny_detector):
    app = create_app(lambda: tiny_detector, ServeSettings(max_upload_bytes=64 * 1024))
    with ready_client(app) as c:
        big = image_bytes(200, 200, seed=5)  # noise PNG: ~120 KB
        assert len(big) > 64 * 1024
        r = c.post(PREDICT, files=files(("big.png", big)))
        assert r.status_code == 413
        assert "too large" in r.json()["detail"]

        # Without Content-Length (chunked), the running total stops it too.
        boundary = "xyzBOUNDARY"
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
                   f"Content-Type: image/png\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()

        def chunks():
            for i in range(0, len(payload), 8192):
                yield payload[i:i + 8192]

        mp = {"content-type": f"multipart/form-data; boundary={boundary}"}
        r = c.post(PREDICT, content=chunks(), headers=mp)
        assert r.status_code == 413
        assert "too large" in r.json()["detail"]
        # a small image still passes
        assert c.post(PREDICT, files=files(("s.png", image_bytes()))).status_code == 200


def test_413_too_many_files(tiny_detector):
    app = create_app(lambda: tiny_detector, ServeSettings(max_files=2))
    with ready_client(app) as c:
        r = c.post(PREDICT, files=files(*[(f"{i}.png", image_bytes(seed=i)) for i in range(3)]))
        assert r.status_code == 413
        assert "files" in r.json()["detail"].lower()


def test_415_text_named_png_with_image_content_type(client):
    r = client.post(PREDICT, files=files(("photo.png", b"just some text, not pixels\n" * 10)))
    assert r.status_code == 415
    assert "photo.png" in r.json()["detail"] and "not a supported image" in r.json()["detail"]


def test_415_one_bad_file_rejects_the_request(client):
    r = client.post(PREDICT, files=files(("ok.png", image_bytes()), ("bad.jpg", b"<html></html>")))
    assert r.status_code == 415
    assert "file 2" in r.json()["detail"]


def test_415_body_not_multipart(client):
    r = client.post(PREDICT, content=image_bytes(), headers={"content-type": "image/png"})
    assert r.status_code == 415
    assert "multipart/form-data" in r.json()["detail"]


def test_422_decompression_bomb_header(client):
    r = client.post(PREDICT, files=files(("bomb.png", png_bomb(100_000, 100_000))))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "too large" in detail and "bomb" in detail


def test_422_over_the_configured_pixel_limit(tiny_detector):
    app = create_app(lambda: tiny_detector, ServeSettings(max_pixels=50 * 50))
    with ready_client(app) as c:
        r = c.post(PREDICT, files=files(("wide.png", image_bytes(60, 50))))
        assert r.status_code == 422
        assert "60x50 = 3000 pixels > max_pixels=2500" in r.json()["detail"]
        assert c.post(PREDICT, files=files(("ok.png", image_bytes(50, 50)))).status_code == 200


def test_422_no_file_and_empty_file(client):
    r = client.post(PREDICT, files=files(("a.png", image_bytes()), field="image"))
    assert r.status_code == 422 and "files" in r.json()["detail"]
    r = client.post(PREDICT, files=files(("empty.png", b"")))
    assert r.status_code == 422 and "empty" in r.json()["detail"]


def test_400_malformed_multipart(client):
    r = client.post(PREDICT, content=b"garbage", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    assert "boundary" in r.json()["detail"].lower()


def test_400_multipart_body_cut_short(client):
    # a body that ends inside its part (no closing boundary): the parser drops the unfinished
    # part, which used to read as "no file" (422)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + image_bytes()[:100])
    r = client.post(PREDICT, content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400
    assert "closing boundary" in r.json()["detail"]
    r = client.post(PREDICT, content=b"", headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400


def test_503_with_retry_after_when_saturated():
    fake = FakeDetector(block=True)
    app = create_app(lambda: fake, ServeSettings(max_concurrency=1, queue_timeout_s=0.0, retry_after_s=3,
                                                     warmup=False))
    with ready_client(app) as c:
        first: dict = {}

        def hold():
            first["r"] = c.post(PREDICT, files=files(("a.png", image_bytes())))

        t = threading.Thread(target=hold)
        t.start()
        try:
            assert fake.entered.wait(10), "the first request never reached the detector"
            r = c.post(PREDICT, files=files(("b.png", image_bytes())))
            assert r.status_code == 503
            assert r.headers["retry-after"] == "3"
            assert "busy" in r.json()["detail"]
            assert c.get("/healthz").status_code == 200  # the event loop is not blocked
        finally:
            fake.gate.set()
            t.join(10)
        assert first["r"].status_code == 200
        assert fake.calls == 1  # the refused request never reached the model
        # the slot was released
        assert c.post(PREDICT, files=files(("c.png", image_bytes()))).status_code == 200


# ---- uploads never touch the disk ----------------------------------------------------------------

@pytest.fixture
def disk_spy(tmp_path, monkeypatch):
    """Point tempfile at an empty folder and record every temp-file creation."""
    created: list[str] = []
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_dir))
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        real = getattr(tempfile, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            created.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(tempfile, name, spy)
    return tmp_dir, created


def _big_noise_png() -> bytes:
    data = image_bytes(800, 600, seed=9)  # ~1.4 MB: above starlette's 1 MiB spool threshold
    assert len(data) > 1024 * 1024
    return data


def test_uploads_are_not_spooled_to_disk(client, disk_spy):
    tmp_dir, created = disk_spy
    r = client.post(PREDICT, files=files(("big.png", _big_noise_png()), ("small.png", image_bytes())))
    assert r.status_code == 200
    assert [x["error"] for x in r.json()["results"]] == [None, None]
    assert created == []
    assert os.listdir(tmp_dir) == []


def test_disk_spy_detects_stock_starlette_spooling(disk_spy):
    # Control: the same upload through starlette's own form parsing does roll over to a temp file,
    # so the test above would fail if the server used it.
    _, created = disk_spy
    stock = FastAPI()

    @stock.post("/up")
    async def up(request: Request) -> dict:
        form = await request.form()
        n = len(form.getlist("files"))
        await form.close()
        return {"n": n}

    with TestClient(stock) as c:
        assert c.post("/up", files=files(("big.png", _big_noise_png()))).json() == {"n": 1}
    assert "TemporaryFile" in created


# ---- logs ----------------------------------------------------------------------------------------

def test_one_json_access_line_per_request_without_names_or_content(client, caplog):
    secret = "holiday-secret-name.png"
    img = image_bytes(seed=11)
    with caplog.at_level(logging.DEBUG):
        client.post(PREDICT, files=files((secret, img), ("x.png", img)))
        client.post(PREDICT, files=files((secret, b"text, not an image")))
        client.get("/healthz")
    access = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    lines = [json.loads(r.getMessage()) for r in access]
    assert [(x["method"], x["path"], x["status"], x["n_files"]) for x in lines] == [
        ("POST", PREDICT, 200, 2), ("POST", PREDICT, 415, 1), ("GET", "/healthz", 200, None),
    ]
    for x in lines:
        assert set(x) == {"ts", "method", "path", "status", "duration_ms", "n_files"}
        assert x["duration_ms"] >= 0
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in everything and "holiday" not in everything
    assert "text, not an image" not in everything


# ---- explain -------------------------------------------------------------------------------------

def test_explain_returns_a_png(client):
    r = client.post(EXPLAIN, files=files(("a.png", image_bytes(seed=12)), field="file"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_explain_title_names_the_uploaded_file(client, monkeypatch):
    from mpft import explain
    seen: list[str] = []
    real_render = explain.render

    def spy(expl, out, **kwargs):
        seen.append(expl.source)
        return real_render(expl, out, **kwargs)

    monkeypatch.setattr(explain, "render", spy)
    r = client.post(EXPLAIN, files=files(("holiday photo.png", image_bytes(seed=13)), field="file"))
    assert r.status_code == 200, r.text
    assert seen == ["holiday photo.png"]
    # a path the client sent is reduced to its name
    r = client.post(EXPLAIN, files=files(("C:\\Users\\me\\cat.png", image_bytes(seed=14)), field="file"))
    assert r.status_code == 200 and seen[-1] == "cat.png"


def test_explain_rejects_bad_input(client):
    r = client.post(EXPLAIN, files=files(("a.png", image_bytes()), ("b.png", image_bytes()), field="file"))
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]
    r = client.post(EXPLAIN, files=files(("cut.png", image_bytes(64, 64)[:150]), field="file"))
    assert r.status_code == 422 and "cut.png" in r.json()["detail"]
    r = client.post(EXPLAIN, files=files(("a.png", b"hello"), field="file"))
    assert r.status_code == 415


def test_explain_is_501_without_the_explain_module(client, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mpft.explain", None)
    r = client.post(EXPLAIN, files=files(("a.png", image_bytes()), field="file"))
    assert r.status_code == 501
    assert "mpft.explain" in r.json()["detail"]


# ---- the rest of the surface ---------------------------------------------------------------------

def test_errors_are_json_detail(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.get(PREDICT)
    assert r.status_code == 405 and "detail" in r.json()


def test_page_openapi_and_headers(client):
    r = client.get("/")
    assert r.status_code == 200
    assert 'id="file-input"' in r.text and 'type="file"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {PREDICT, EXPLAIN, "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"][PREDICT]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["files"]["type"] == "array"
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "kwargs", [{"max_concurrency": 0}, {"max_upload_bytes": 10}, {"queue_timeout_s": -1},
               {"header_timeout_s": 0}, {"body_timeout_s": -1}, {"max_connections": 0}, {"batch_window_s": 2}]
)
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        ServeSettings(**kwargs)


def test_unexpected_failure_is_a_json_500_and_logged(caplog):
    class Broken(FakeDetector):
        def predict(self, images, *, batch_size: int = 16):
            raise RuntimeError("boom")

    app = create_app(lambda: Broken(), ServeSettings(warmup=False))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.INFO):
        assert app.state.model.wait(10)
        r = c.post(PREDICT, files=files(("a.png", image_bytes())))
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error (see the server log)"}
    access = [json.loads(x.getMessage()) for x in caplog.records if x.name == ACCESS_LOGGER]
    assert access[-1]["status"] == 500


def test_upload_size_check_is_the_detectors_one_limit_not_pillows():
    """A 108 MP phone photo passes when max_pixels allows it (Pillow's own guard fires at 89.5 MP)."""
    from mpft.serve.upload import check_image

    data = png_bomb(12000, 9000)
    assert check_image(data, max_pixels=200_000_000) is None
    status, reason = check_image(data, max_pixels=64_000_000)
    assert status == 422 and "max_pixels" in reason

"""Issue 28's attacks that need no real server: CPU-bomb uploads over the API, annotation
output bounds, what error bodies give away, forged access-log lines, metric label floods and
the documented max_faces bound. Over-the-wire attacks (slow clients, header floods,
connection floods, shutdown) are in `tests/test_serving.py`."""

from __future__ import annotations

import io
import logging
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.logsafe import escape
from tests import images

PROBLEM = "application/problem+json"


def test_log_fields_escape_line_breaks_and_terminal_codes() -> None:
    assert escape("/a\r\nINFO forged\x1b[31m\x00") == "/a\\x0d\\x0aINFO forged\\x1b[31m\\x00"
    assert escape("plain /predict?x=1 é") == "plain /predict?x=1 é"


def test_the_access_log_cannot_be_forged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emotion.access")
    client.get("/nowhere%0D%0A127.0.0.1%20%22GET%20/%22%20200%1B%5B2J")
    lines = [r.getMessage() for r in caplog.records if r.name == "emotion.access"]
    assert lines and all("\r" not in m and "\n" not in m and "\x1b" not in m for m in lines)
    assert any("\\x0d\\x0a127.0.0.1" in m for m in lines), lines


def test_made_up_methods_share_one_metric_label(client: TestClient) -> None:
    for i in range(5):
        client.request(f"BREW{i}", "/healthz")
    text = client.get("/metrics").text
    assert "BREW" not in text and 'method="other"' in text


def test_max_faces_bound_is_in_the_schema(client: TestClient) -> None:
    limit = client.app.state.settings.max_faces_limit  # type: ignore[attr-defined]
    params = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["parameters"]
    schema = next(p["schema"] for p in params if p["name"] == "max_faces")
    assert any(o.get("maximum") == limit for o in schema.get("anyOf", [schema]))


def test_a_many_scan_jpeg_is_a_quick_422(client: TestClient) -> None:
    data = images.many_scan_jpeg(2000, side=256)
    t0 = time.perf_counter()
    r = client.post("/predict", files={"file": ("bomb.jpg", data, "image/jpeg")})
    assert time.perf_counter() - t0 < 3.0
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith(":image-too-complex")


def test_a_many_page_tiff_is_read_quickly(client: TestClient) -> None:
    data = images.many_page_tiff(20_000)
    t0 = time.perf_counter()
    r = client.post("/predict", files={"file": ("p.tif", data)}, params={"detector": "none"})
    assert r.status_code == 200, r.text
    assert time.perf_counter() - t0 < 3.0


def test_error_bodies_carry_no_internals(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The decoder's own message is logged under the request ID, not sent."""
    caplog.set_level(logging.INFO, logger="emotion")
    data = bytearray(images.encode(images.astronaut()[::8, ::8], "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\x00" * 32
    r = client.post("/predict", files={"file": ("x.png", bytes(data))})
    assert r.status_code == 400
    for leak in ("Error", "PIL", "Pillow", "zlib", "/", "pydantic"):
        assert leak not in r.json()["detail"], r.text
    logged = [m.getMessage() for m in caplog.records if m.name == "emotion.problems"]
    assert any(f"(request {r.headers['x-request-id']}): " in m for m in logged), logged


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_annotated_pictures_are_bounded_in_size(client: TestClient, fmt: str) -> None:
    """Over JPEG's 65,535-pixel side, once answered 500: scaled to max_annotated_side."""
    wide = Image.new("L", (70_000, 40), 128)
    upload = images.encode(wide, "PNG")
    r = client.post(
        "/predict/annotated",
        files={"file": ("wide.png", upload)},
        params={"detector": "none", "format": fmt},
    )
    assert r.status_code == 200, r.text
    side = client.app.state.settings.max_annotated_side  # type: ignore[attr-defined]
    with Image.open(io.BytesIO(r.content)) as out:
        assert max(out.size) == side and min(out.size) >= 1

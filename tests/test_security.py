"""The API key and file access: what a hostile caller can and cannot reach.

`tests/test_api.py::test_api_key` covers the basic key round trip; these add what a review of
the guarantee needs: off by default, one indistinguishable 401 for every wrong key, a
constant-time comparison, probes exempt (also behind a path prefix), and no way for a request
to name a file, on the URL, in a query value, in an upload's file name or in the registry.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.routing import Mount

from app import middleware
from app.inference import ModelCatalog
from app.registry import ModelEntry
from app.settings import Settings
from tests import images
from tests.tiny_models import GRAY48, add_model, write_registry

KEY = "correct horse battery staple"
PHOTO = images.encode(images.astronaut()[::4, ::4], "JPEG")
PROBLEM = "application/problem+json"


def post(client: TestClient, headers: dict[str, str | bytes] | None = None, **params: str):
    return client.post(
        "/predict", files={"file": ("a.jpg", PHOTO, "image/jpeg")}, params=params, headers=headers
    )


@pytest.fixture(scope="module")
def keyed(make_client: Callable[..., TestClient], tiny_models_dir: Path) -> TestClient:
    return make_client(tiny_models_dir, api_key=KEY, root_path="/emotion")


# --- API key --------------------------------------------------------------------------------


def test_api_key_is_off_by_default(monkeypatch: pytest.MonkeyPatch, client: TestClient) -> None:
    monkeypatch.delenv("EMOTION_API_KEY", raising=False)
    assert Settings().api_key is None
    assert client.get("/models").status_code == 200
    assert post(client).status_code == 200
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})


def test_every_wrong_key_gets_the_same_401(keyed: TestClient) -> None:
    """Missing, empty, too short, too long, almost right, non-ASCII: one identical answer."""
    attempts: list[dict[str, str | bytes] | None] = [
        None,
        {"X-API-Key": ""},
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": KEY.upper()},
        {"X-API-Key": "é".encode() * 20},  # raw non-ASCII header bytes
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": f" {KEY}x"},
    ]
    bodies = []
    for headers in attempts:
        r = post(keyed, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert body.pop("request_id") == r.headers["x-request-id"]
        bodies.append(body)
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["type"].endswith(":unauthorized")
    assert KEY not in str(bodies[0])
    assert post(keyed, headers={"X-API-Key": KEY}).status_code == 200


def test_the_key_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, keyed: TestClient
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    post(keyed, headers={"X-API-Key": "guess"})
    post(keyed, headers={"X-API-Key": KEY})
    assert calls == [(b"guess", KEY.encode()), (KEY.encode(), KEY.encode())]
    source = inspect.getsource(middleware.ApiKeyCheck)
    assert "hmac.compare_digest" in source and "== self.key" not in source


def test_probes_are_exempt_also_behind_the_prefix(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert keyed.get(path).status_code == 200, path
        assert keyed.get("/emotion" + path).status_code == 200, path
    for path in ("/models", "/emotion/models", "/docs", "/openapi.json", "/healthz/", "/HEALTHZ"):
        assert keyed.get(path).status_code == 401, path


def test_the_key_is_checked_before_the_body_is_read_and_never_logged(
    keyed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    huge = {"content-length": str(10**12), "content-type": "multipart/form-data; boundary=x"}
    r = keyed.post("/predict", content=b"--x--", headers=huge)
    assert r.status_code == 401  # not 413: nothing about the request is looked at before the key
    post(keyed, headers={"X-API-Key": KEY})
    post(keyed, headers={"X-API-Key": KEY[:-1] + "!"})
    assert KEY not in caplog.text and KEY[:-1] not in caplog.text


# --- no endpoint reads or writes a file the client chooses -------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "gray48.onnx",
        "gray48/../rgb224",
        "./gray48",
        "registry.json",
        "gray48\x00",
        "%2e%2e%2fetc%2fpasswd",
        "x" * 5000,
    ],
)
def test_model_names_are_registry_lookups_only(client: TestClient, name: str) -> None:
    r = post(client, model=name)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith(":unknown-model")
    assert "root:" not in r.text


def test_no_route_takes_a_path(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert not [p for p in schema["paths"] if "{" in p], "no templated (path) parameters"
    params = {
        p["name"]
        for ops in schema["paths"].values()
        for op in ops.values()
        for p in op.get("parameters", [])
    }
    assert params <= {"model", "detector", "fallback", "max_faces", "format"}
    annotated = client.post(
        "/predict/annotated",
        files={"file": ("a.jpg", PHOTO, "image/jpeg")},
        params={"format": "../../etc/passwd"},
    )
    assert annotated.status_code == 422 and "format" in annotated.text  # an enum, not a path
    assert not [r for r in client.app.routes if isinstance(r, Mount)], "no static file mounts"
    for url in ("/../../etc/passwd", "/docs/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"):
        r = client.get(url)
        assert r.status_code == 404 and "root:" not in r.text, url
    r = post(client, detector="/etc/passwd")
    assert r.status_code == 422


def test_upload_file_names_are_only_echoed(client: TestClient, tmp_path: Path) -> None:
    target = tmp_path / "written-by-a-request.jpg"
    files = [
        ("files", (str(target), PHOTO, "image/jpeg")),
        ("files", ("../../../../etc/passwd", b"not an image", "text/plain")),
    ]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    assert [x["filename"] for x in r.json()["results"]] == [str(target), "../../../../etc/passwd"]
    assert not target.exists()
    assert "root:" not in r.text


@pytest.mark.parametrize(
    "file", ["../gray48.onnx", "/etc/passwd", "sub/gray48.onnx", "./gray48.onnx", "..", ".", ""]
)
def test_the_registry_refuses_a_file_that_is_a_path(file: str) -> None:
    entry = bare_entry()
    with pytest.raises(ValidationError, match="bare file name"):
        ModelEntry(**(entry.model_dump() | {"file": file}))


def bare_entry() -> ModelEntry:
    """A valid registry entry with no model file behind it: only its fields are checked."""
    return ModelEntry(
        name="m",
        version="1",
        file="m.onnx",
        sha256="0" * 64,
        labels=["a", "b"],
        input={"height": 48, "width": 48, "channels": 1},
    )


def test_a_registry_with_a_path_entry_starts_not_ready(tmp_path: Path) -> None:
    """The manifest is refused as a whole; the service reports it instead of opening the path."""
    good = add_model(tmp_path, "good", GRAY48, default=True)
    write_registry(tmp_path, [good])
    raw = (tmp_path / "registry.json").read_text().replace('"good.onnx"', '"../good.onnx"')
    (tmp_path / "registry.json").write_text(raw)
    catalog = ModelCatalog(Settings(models_dir=tmp_path, inference_threads=1))
    assert catalog.states == {}
    assert "bare file name" in (catalog.registry_error or "")


def test_a_nul_byte_in_a_registry_file_name_is_harmless(tmp_path: Path) -> None:
    good = add_model(tmp_path, "good", GRAY48, default=True)
    write_registry(tmp_path, [good.model_copy(update={"file": "good.onnx\x00.txt"})])
    catalog = ModelCatalog(Settings(models_dir=tmp_path, inference_threads=1))
    assert catalog.states["good"].model is None
    assert "does not exist" in (catalog.states["good"].error or "")


ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key",
}


def test_cors_is_off_by_default(client: TestClient) -> None:
    assert "access-control-allow-origin" not in post(client, {"Origin": ORIGIN}).headers
    assert client.options("/predict", headers=PREFLIGHT).status_code == 405


def test_cors_lets_the_configured_origins_call_with_a_key(
    make_client: Callable[..., TestClient], tiny_models_dir: Path
) -> None:
    app = make_client(tiny_models_dir, cors_origins=f" {ORIGIN} , https://b.example ", api_key="k")
    # A browser's preflight carries no key: it is answered before the key check.
    pre = app.options("/predict", headers=PREFLIGHT)
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
    ok = post(app, {"Origin": ORIGIN, "X-API-Key": "k"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
    refused = post(app, {"Origin": ORIGIN})  # the page can read why it was refused
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    other = post(app, {"Origin": "https://evil.example", "X-API-Key": "k"})
    assert "access-control-allow-origin" not in other.headers

"""The HTTP API end to end in-process: real detectors, real onnxruntime, tiny models."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from app.files import sha256_file
from app.labels import EMOTIONS
from app.runtime import NOT_LOADED
from tests import images
from tests.tiny_models import GRAY48, TinySpec, add_model, tiny_registry, write_registry

PROBLEM = "application/problem+json"


def jpeg(rgb: np.ndarray | None = None) -> bytes:
    return images.encode(images.astronaut() if rgb is None else rgb, "JPEG", quality=90)


def post(client, data: bytes, name: str = "photo.jpg", **params):
    return client.post("/predict", params=params, files={"file": (name, data, "image/jpeg")})


def post_batch(client, files: list[tuple[str, bytes]], **params):
    return client.post(
        "/predict/batch",
        params=params,
        files=[("files", (n, d, "application/octet-stream")) for n, d in files],
    )


def assert_face(face: dict, width: int, height: int) -> None:
    box = face["box"]
    assert all(isinstance(box[k], int) for k in ("x", "y", "width", "height"))
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    assert box["y"] >= 0 and box["y"] + box["height"] <= height
    probs = face["probabilities"]
    assert list(probs) == list(EMOTIONS)
    # rounded to 4 decimals, so seven of them sum to 1 within 7 half-units of the last digit
    assert all(round(p, 4) == p for p in probs.values())
    assert sum(probs.values()) == pytest.approx(1.0, abs=3.5e-4)
    assert probs[face["emotion"]] == max(probs.values())
    assert face["score"] is None or round(face["score"], 4) == face["score"]


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"].endswith(":" + slug)
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


# --- /predict -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gray48", "rgb224"])
def test_predict_one_face_with_either_input_kind(client, model):
    r = post(client, jpeg(), model=model, detector="short")  # ASTRONAUT_FACE is its box
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": model, "version": "0.0.1"}
    assert body["image"] == {"width": 512, "height": 512}
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert_face(face, 512, 512)
    assert face["detected"] is True and 0.5 < face["score"] <= 1
    x, y, w, _ = images.ASTRONAUT_FACE
    assert abs(face["box"]["x"] - x) < 10 and abs(face["box"]["y"] - y) < 10
    assert set(body["timing_ms"]) == {
        "decode",
        "detect",
        "align",
        "preprocess",
        "inference",
        "total",
    }


def test_default_model_is_the_registry_default(client):
    assert post(client, jpeg()).json()["model"]["name"] == "gray48"


def test_models_see_different_inputs_and_answer_differently(client):
    a = post(client, jpeg(), model="gray48").json()["faces"][0]["probabilities"]
    b = post(client, jpeg(), model="rgb224").json()["faces"][0]["probabilities"]
    assert a != b


def test_full_range_detector_and_faces_sorted_by_size(client):
    body = post(client, images.encode(images.group(), "PNG"), "group.png", detector="full").json()
    areas = [f["box"]["width"] * f["box"]["height"] for f in body["faces"]]
    assert len(areas) == 3 and areas == sorted(areas, reverse=True)
    for face in body["faces"]:
        assert_face(face, 640, 360)
    cut = post(client, images.encode(images.group(), "PNG"), detector="full", max_faces=2).json()
    assert [f["box"] for f in cut["faces"]] == [f["box"] for f in body["faces"][:2]]


def test_the_default_search_finds_a_row_of_small_faces_that_short_range_misses(client):
    """Five faces about 42 px wide in a 1280x720 photo: the query needs no detector choice."""
    from tests.test_face_search import row_of_faces

    photo = images.encode(row_of_faces(1280, 720, 100, 5)[0], "PNG")
    assert post(client, photo, "row.png", detector="short").json()["faces"] == []
    body = post(client, photo, "row.png").json()
    assert len(body["faces"]) == 5
    for face in body["faces"]:
        assert_face(face, 1280, 720)
        assert face["detected"] and face["score"] >= 0.4


@pytest.mark.parametrize("path", ["/predict", "/predict/annotated", "/predict/batch"])
def test_a_misspelt_query_parameter_is_refused_not_ignored(client, path):
    field = "files" if path.endswith("batch") else "file"
    r = client.post(
        path, params={"detecter": "full"}, files=[(field, ("a.jpg", jpeg(), "image/jpeg"))]
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    (error,) = r.json()["errors"]
    assert error["loc"] == ["query", "detecter"] and "detector" in error["msg"]


def test_detector_none_classifies_the_whole_image(client):
    (face,) = post(client, jpeg(), detector="none").json()["faces"]
    assert face["box"] == {"x": 0, "y": 0, "width": 512, "height": 512}
    assert face["detected"] is False and face["score"] is None


def test_no_face_gives_an_empty_list_unless_fallback_whole(client):
    coffee = jpeg(images.no_face())
    r = post(client, coffee)
    assert r.status_code == 200 and r.json()["faces"] == []
    (face,) = post(client, coffee, fallback="whole").json()["faces"]
    assert face["detected"] is False and face["score"] is None
    assert face["box"] == {"x": 0, "y": 0, "width": 600, "height": 400}


def test_annotated_photo_draws_each_face_box_in_its_emotion_colour(client):
    from app.annotate import COLORS

    group = images.encode(images.group(), "PNG")
    faces = post(client, group, "group.png", detector="full").json()["faces"]
    r = client.post(
        "/predict/annotated",
        params={"detector": "full", "format": "png"},
        files={"file": ("group.png", group, "image/png")},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-faces"] == "3" and r.headers["x-model"].startswith("gray48 ")
    drawn = np.asarray(Image.open(io.BytesIO(r.content)))
    assert drawn.shape == images.group().shape
    for face in faces:  # the box's bottom edge, in the colour of the face's top emotion
        b = face["box"]
        bottom = drawn[b["y"] + b["height"] - 1, b["x"] + 2 : b["x"] + b["width"] - 2]
        assert (bottom == COLORS[face["emotion"]]).all(), face["emotion"]
    # Outside every box and label the photo is untouched (PNG is lossless).
    assert (drawn[-3:, :] == images.group()[-3:, :]).all()


def test_annotated_photo_is_a_jpeg_by_default_and_refuses_bad_input_like_predict(client):
    r = client.post("/predict/annotated", files={"file": ("a.jpg", jpeg(), "image/jpeg")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:3] == b"\xff\xd8\xff" and r.headers["x-faces"] == "1"
    coffee = client.post("/predict/annotated", files={"file": ("c.jpg", jpeg(images.no_face()))})
    assert coffee.status_code == 200 and coffee.headers["x-faces"] == "0"
    bad = client.post("/predict/annotated", files={"file": ("t.txt", b"hello")})
    assert_problem(bad, 400, "not-an-image")
    assert_problem(
        client.post(
            "/predict/annotated", params={"format": "gif"}, files={"file": ("a.jpg", jpeg())}
        ),
        422,
        "invalid-request",
    )


def test_exif_rotated_photo_boxes_are_in_the_displayed_frame(client):
    upright = np.ascontiguousarray(images.astronaut()[:, :400])  # 400 wide, 512 tall
    expected = post(client, jpeg(upright)).json()["faces"][0]["box"]
    body = post(client, images.exif_rotated_jpeg(upright)).json()
    assert body["image"] == {"width": 400, "height": 512}
    box = body["faces"][0]["box"]
    for k in ("x", "y", "width", "height"):
        assert abs(box[k] - expected[k]) <= 6, (box, expected)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_other_formats_through_the_api(client, fmt):
    r = post(client, images.encode(images.astronaut(), fmt), f"a.{fmt.lower()}")
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"]) == 1


def test_gray_and_transparent_photos_through_the_api(client):
    gray = images.encode(images.astronaut().mean(axis=-1).astype(np.uint8), "PNG")
    assert len(post(client, gray).json()["faces"]) == 1
    rgba = np.dstack([images.astronaut(), np.full((512, 512), 255, np.uint8)])
    assert len(post(client, images.encode(rgba, "PNG")).json()["faces"]) == 1


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "slug"),
    [
        (b"", 400, "empty-file"),
        (b"GIF89a? no, just text", 400, "not-an-image"),
        (b"plain text", 400, "not-an-image"),
        (jpeg()[:2000], 400, "truncated-image"),
        (images.encode(images.astronaut()[:64, :64], "ICO"), 415, "unsupported-format"),
    ],
    ids=["empty", "fake-gif", "text", "truncated", "ico"],
)
def test_bad_uploads_are_problems(client, data, status, slug):
    assert_problem(post(client, data), status, slug)


def test_missing_file_field_is_a_422_problem(client):
    body = assert_problem(client.post("/predict", data={"other": "x"}), 422, "invalid-request")
    assert "file" in body["detail"]
    assert_problem(client.post("/predict", json={"file": "x"}), 422, "invalid-request")


@pytest.mark.parametrize(
    "params",
    [
        {"detector": "tiny"},
        {"fallback": "maybe"},
        {"max_faces": 0},
        {"max_faces": "many"},
        {"max_faces": 101},
    ],
)
def test_bad_query_values_are_422_problems(client, params):
    body = assert_problem(post(client, jpeg(), **params), 422, "invalid-request")
    [error] = body["errors"]
    assert error["loc"] == ["query", next(iter(params))] and error["msg"] in body["detail"]


def test_unknown_model_is_a_404_problem(client):
    body = assert_problem(post(client, jpeg(), model="nope"), 404, "unknown-model")
    assert "gray48" in body["detail"]


@pytest.fixture(scope="module")
def small_limits(make_client, tiny_models_dir):
    return make_client(
        tiny_models_dir, max_upload_bytes=20_000, max_pixels=100_000, max_batch_files=2
    )


def test_upload_over_the_byte_limit_is_a_413(small_limits):
    big = jpeg()
    assert 20_000 < len(big) < 80_000
    assert_problem(post(small_limits, big), 413, "file-too-large")


def test_body_over_the_cap_is_refused_from_content_length(small_limits):
    """Far over the cap: refused before the body is read."""
    huge = jpeg(np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8))
    assert len(huge) > 20_000 + 64 * 1024
    body = assert_problem(post(small_limits, huge), 413, "request-too-large")
    assert "bytes" in body["detail"]


def test_streamed_body_over_the_cap_is_cut_off(small_limits):
    """Without a Content-Length the cap is enforced while the body streams in."""
    boundary = "XyZ"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"'
        f"\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    chunks = [head] + [b"\xff" * 16_384] * 10 + [f"\r\n--{boundary}--\r\n".encode()]
    r = small_limits.post(
        "/predict",
        content=iter(chunks),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_problem(r, 413, "request-too-large")


def test_file_over_the_limit_inside_a_batch_fails_alone(small_limits):
    small = jpeg(images.astronaut()[::4, ::4])
    r = post_batch(small_limits, [("big.jpg", jpeg()), ("small.jpg", small)], detector="none")
    assert r.status_code == 200, r.text
    big, ok = r.json()["results"]
    assert big["error"]["status"] == 413 and big["error"]["type"].endswith(":file-too-large")
    assert ok["filename"] == "small.jpg" and len(ok["faces"]) == 1


def test_image_over_the_pixel_limit_is_a_413(small_limits):
    png = images.encode(np.zeros((400, 400, 3), np.uint8), "PNG")  # 160k pixels, tiny file
    body = assert_problem(post(small_limits, png), 413, "image-too-large")
    assert "400x400" in body["detail"]


def test_too_many_files_is_a_413(small_limits):
    tiny = jpeg(images.astronaut()[::8, ::8])
    r = post_batch(small_limits, [("a.jpg", tiny)] * 3)
    assert_problem(r, 413, "too-many-files")


def test_batch_needs_at_least_one_file(client):
    assert_problem(client.post("/predict/batch", data={"x": "1"}), 422, "invalid-request")


# --- /predict/batch -----------------------------------------------------------------------


def test_batch_keeps_order_and_isolates_bad_files(client):
    files = [
        ("astro.jpg", jpeg()),
        ("notes.txt", b"hello"),
        ("group.png", images.encode(images.group(), "PNG")),
        ("coffee.jpg", jpeg(images.no_face())),
        ("cut.jpg", jpeg()[:1500]),
    ]
    r = post_batch(client, files, detector="full")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "gray48"
    results = body["results"]
    assert [x["filename"] for x in results] == [n for n, _ in files]
    assert len(results[0]["faces"]) == 1 and "error" not in results[0]
    assert results[1]["error"]["status"] == 400 and set(results[1]) == {"filename", "error"}
    assert len(results[2]["faces"]) == 3 and results[2]["image"] == {"width": 640, "height": 360}
    assert results[3]["faces"] == []
    assert results[4]["error"]["type"].endswith(":truncated-image")
    for result in (results[0], results[2]):
        for face in result["faces"]:
            assert_face(face, result["image"]["width"], result["image"]["height"])


def test_a_32767_pixel_wide_image_in_a_batch_fails_nothing(client):
    """MediaPipe's OpenCV aborts the process on such a side unless the detector shrinks it."""
    wide = images.encode(np.zeros((1, 32767, 3), np.uint8), "PNG")
    r = post_batch(client, [("astro.jpg", jpeg()), ("wide.png", wide)], detector="full")
    assert r.status_code == 200, r.text
    astro, strip = r.json()["results"]
    assert len(astro["faces"]) == 1
    assert strip["image"] == {"width": 32767, "height": 1} and strip["faces"] == []
    assert client.get("/healthz").status_code == 200


def test_batch_runs_all_faces_in_one_inference_call(client):
    model = client.app.state.runtime.catalog.states["rgb224"].model
    before = model.calls
    group = images.encode(images.group(), "PNG")
    r = post_batch(
        client,
        [("a.jpg", jpeg()), ("g.png", group), ("b.jpg", jpeg())],
        detector="full",
        model="rgb224",
    )
    assert sum(len(x["faces"]) for x in r.json()["results"]) == 5
    assert model.calls - before == 1


def test_batch_results_match_single_predictions(client):
    single = post(client, jpeg(), model="rgb224").json()["faces"]
    batch = post_batch(
        client, [("a.jpg", jpeg()), ("b.jpg", jpeg(images.no_face()))], model="rgb224"
    ).json()["results"][0]["faces"]
    assert batch[0]["box"] == single[0]["box"]
    for k, v in single[0]["probabilities"].items():
        assert batch[0]["probabilities"][k] == pytest.approx(v, abs=1e-6)


def test_inference_failure_on_one_image_fails_only_that_item(make_client, tmp_path):
    entry = add_model(tmp_path, "fragile", TinySpec(48, 48, 1, nan_on_white=True), default=True)
    write_registry(tmp_path, [entry])
    client = make_client(tmp_path)
    white = images.encode(np.full((64, 64, 3), 255, np.uint8), "PNG")
    r = post_batch(
        client,
        [("astro.jpg", jpeg()), ("white.png", white), ("again.jpg", jpeg())],
        fallback="whole",
    )
    assert r.status_code == 200, r.text
    astro, failed, again = r.json()["results"]
    assert len(astro["faces"]) == 1 and len(again["faces"]) == 1
    assert failed["error"]["status"] == 500
    assert failed["error"]["type"].endswith(":inference-failed")
    assert_problem(post(client, white, fallback="whole"), 500, "inference-failed")


# --- models, probes, metrics --------------------------------------------------------------


def test_models_lists_registry_entries_with_status(client):
    body = client.get("/models").json()
    assert body["default"] == "gray48"
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"gray48", "rgb224"}
    gray = by_name["gray48"]
    assert gray["default"] is True and gray["loaded"] is True and gray["error"] is None
    assert gray["input"]["height"] == 48 and gray["input"]["channels"] == 1
    assert gray["labels"] == list(EMOTIONS)
    assert gray["metrics"]["accuracy"] == 0.14
    assert by_name["rgb224"]["input"]["width"] == 224


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "detectors": ["short", "full"],
        "models": ["gray48", "rgb224"],
    }


def test_metrics_use_route_templates_and_a_private_registry(client):
    post(client, jpeg())
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'emotion_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/path" not in text
    for name in (
        "emotion_http_request_duration_seconds_bucket",
        "emotion_faces_per_image_bucket",
        'emotion_inference_seconds_bucket{le="0.001",model="gray48"}',
        "emotion_predict_in_flight",
    ):
        assert name in text
    assert REGISTRY.get_sample_value("emotion_http_requests_total") is None
    assert not any(m.name.startswith("emotion_") for m in REGISTRY.collect())


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/models", "/healthz", "/readyz", "/metrics"} <= set(
        paths
    )
    params = {p["name"] for p in paths["/predict"]["post"]["parameters"]}
    assert params == {"model", "detector", "fallback", "max_faces"}


# --- request IDs, API key, overload, failures ---------------------------------------------


def test_request_id_is_echoed_when_sane_and_made_up_otherwise(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    for bad in ("has spaces", "x" * 300, "new\\nline"):
        rid = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)


def test_access_log_line(client, caplog):
    caplog.set_level("INFO", logger="emotion.access")
    client.get(
        "/healthz", headers={"X-Request-ID": "log-me", "X-Forwarded-For": "203.0.113.9, 10.0.0.2"}
    )
    line = [r.getMessage() for r in caplog.records if "log-me" in r.getMessage()][0]
    assert line.startswith('testclient "GET /healthz" 200 ')  # the socket peer, not the header
    assert "ms request_id=log-me" in line


def test_access_log_trusts_x_forwarded_for_only_when_told(make_client, tiny_models_dir, caplog):
    caplog.set_level("INFO", logger="emotion.access")
    client = make_client(tiny_models_dir, trust_forwarded_for=True)
    client.get(
        "/healthz", headers={"X-Request-ID": "fwd", "X-Forwarded-For": "203.0.113.9, 10.0.0.2"}
    )
    line = [r.getMessage() for r in caplog.records if "fwd" in r.getMessage()][0]
    assert line.startswith('10.0.0.2 "GET /healthz" 200 ')  # the hop our proxy saw


def test_api_key(make_client, tiny_models_dir):
    client = make_client(tiny_models_dir, api_key="s3cret")
    missing = assert_problem(post(client, jpeg()), 401, "unauthorized")
    guessed = client.post(
        "/predict", files={"file": ("a.jpg", jpeg())}, headers={"X-API-Key": "guess"}
    )
    wrong = assert_problem(guessed, 401, "unauthorized")
    assert missing["detail"] == wrong["detail"]
    assert client.get("/models").status_code == 401
    ok = client.post("/predict", files={"file": ("a.jpg", jpeg())}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(open_path).status_code == 200
    schemes = client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()["components"]
    assert "APIKeyHeader" in schemes["securitySchemes"]


def test_overload_answers_503_with_retry_after(client):
    gate = client.app.state.runtime.gate
    gate.active += gate.limit  # as if that many requests were in flight
    try:
        r = post(client, jpeg())
    finally:
        gate.active -= gate.limit
    assert_problem(r, 503, "overloaded")
    assert r.headers["retry-after"] == "1"
    assert client.get("/healthz").status_code == 200  # only predict routes are gated
    assert post(client, jpeg()).status_code == 200
    assert "emotion_predict_rejected_total 1.0" in client.get("/metrics").text


def test_unexpected_errors_are_generic_500_problems(make_client, tiny_models_dir, monkeypatch):
    client = make_client(tiny_models_dir)

    def broken(name):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(client.app.state.runtime, "model", broken)
    r = post(client, jpeg())
    body = assert_problem(r, 500, "internal-error")
    assert "secret" not in r.text and "see the service log" in body["detail"]


# --- readiness with broken models or missing detector files -------------------------------


def test_bad_models_make_the_service_not_ready_while_good_ones_serve(make_client, tmp_path):
    good = add_model(tmp_path, "good", GRAY48, default=True)
    stale = add_model(tmp_path, "stale", GRAY48).model_copy(update={"sha256": "0" * 64})
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage, not protobuf")
    broken = add_model(tmp_path, "spare", GRAY48).model_copy(
        update={
            "name": "broken",
            "file": "broken.onnx",
            "sha256": sha256_file(tmp_path / "broken.onnx"),
        }
    )
    write_registry(tmp_path, [good, stale, broken])
    client = make_client(tmp_path)

    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert len(body["reasons"]) == 2
    assert body["reasons"] == [f"model stale: {NOT_LOADED}", f"model broken: {NOT_LOADED}"]
    assert "onnxruntime" not in str(body) and str(tmp_path) not in str(body)
    assert post(client, jpeg()).json()["model"]["name"] == "good"
    assert_problem(post(client, jpeg(), model="stale"), 503, "model-unavailable")
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["good"]["ready"] and not models["stale"]["ready"]
    assert models["stale"]["error"] == NOT_LOADED


def test_missing_detector_files_start_not_ready(make_client, tiny_models_dir, tmp_path, caplog):
    client = make_client(tiny_models_dir, assets_dir=tmp_path / "empty")
    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert "python -m app.assets" in body["detail"]
    assert "python -m app.assets" in caplog.text
    assert_problem(post(client, jpeg()), 503, "detector-unavailable")
    assert len(post(client, jpeg(), detector="none").json()["faces"]) == 1


def test_missing_registry_starts_not_ready(make_client, tmp_path):
    client = make_client(tmp_path)
    assert "registry" in assert_problem(client.get("/readyz"), 503, "not-ready")["detail"]
    assert_problem(post(client, jpeg()), 503, "model-unavailable")
    assert client.get("/healthz").status_code == 200


def test_separate_apps_do_not_share_state(make_client, tmp_path):
    tiny_registry(tmp_path)
    a = make_client(tmp_path)
    b = make_client(tmp_path)
    assert a.app.state.runtime is not b.app.state.runtime
    assert a.app.state.metrics.registry is not b.app.state.metrics.registry


def test_unknown_paths_and_methods_are_problems(client):
    body = assert_problem(client.get("/nope"), 404, "not-found")
    assert "/nope" in body["detail"]
    assert_problem(client.get("/predict"), 405, "method-not-allowed")


def test_image_errors_are_counted_by_type(client):
    post(client, b"")
    assert 'emotion_image_errors_total{type="empty-file"}' in client.get("/metrics").text


def test_a_default_model_missing_from_the_registry(make_client, tiny_models_dir, caplog):
    client = make_client(tiny_models_dir, default_model="absent")
    detail = assert_problem(client.get("/readyz"), 503, "not-ready")["detail"]
    assert detail == f"model registry: {NOT_LOADED}"
    assert "default model 'absent' is not in the registry" in caplog.text
    assert_problem(post(client, jpeg()), 503, "model-unavailable")
    assert post(client, jpeg(), model="gray48").status_code == 200


def test_each_worker_thread_has_a_detector_instance_of_its_own(client) -> None:
    runtime = client.app.state.runtime
    assert runtime.settings.worker_threads == 2
    assert {kind: d.instances for kind, d in runtime.detectors.items()} == {"short": 2, "full": 2}

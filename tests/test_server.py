"""A real uvicorn process serving a tiny registry, spoken to over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from tests import images
from tests.servers import running_server
from tests.tiny_models import tiny_registry


@pytest.fixture()
def server(tmp_path, assets_dir):
    models = tmp_path / "models"
    tiny_registry(models)
    env = {
        "EMOTION_MODELS_DIR": str(models),
        "EMOTION_ASSETS_DIR": str(assets_dir),
        "EMOTION_WORKER_THREADS": "2",
        "EMOTION_INFERENCE_THREADS": "1",
    }
    log = tmp_path / "server.log"
    with running_server(["uvicorn", "app.main:app", "--no-access-log"], env, log) as (_, url):
        yield url, log


def test_real_http_round_trip(server):
    url, log = server
    photo = images.encode(images.astronaut(), "JPEG")
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post(
            "/predict",
            files={"file": ("a.jpg", photo, "image/jpeg")},
            headers={"X-Request-ID": "e2e-single"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "e2e-single"
        body = r.json()
        assert body["model"]["name"] == "gray48" and len(body["faces"]) == 1

        files = [("files", ("a.jpg", photo)), ("files", ("x.txt", b"nope"))]
        batch = http.post("/predict/batch", files=files, params={"model": "rgb224"})
        assert batch.status_code == 200
        ok, bad = batch.json()["results"]
        assert len(ok["faces"]) == 1 and bad["error"]["status"] == 400

        problem = http.post("/predict", files={"file": ("e.jpg", b"")})
        assert problem.status_code == 400
        assert problem.headers["content-type"] == "application/problem+json"
        assert 'emotion_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in (
            http.get("/metrics").text
        )
    deadline = time.monotonic() + 5
    while "request_id=e2e-single" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in log.read_text().splitlines() if "request_id=e2e-single" in x)
    assert 'emotion.access 127.0.0.1 "POST /predict" 200 ' in line


def test_client_round_trip_splits_batches_and_raises_problems(tmp_path, assets_dir):
    from app.client import EmotionClient, ServiceError
    from app.schemas import BatchError, BatchImage

    models = tmp_path / "models"
    tiny_registry(models)
    env = {
        "EMOTION_MODELS_DIR": str(models),
        "EMOTION_ASSETS_DIR": str(assets_dir),
        "EMOTION_INFERENCE_THREADS": "1",
        "EMOTION_API_KEY": "k" * 24,
        "EMOTION_MAX_BATCH_FILES": "2",
    }
    photo = tmp_path / "a.jpg"
    photo.write_bytes(images.encode(images.astronaut(), "JPEG"))
    with running_server(["uvicorn", "app.main:app", "--no-access-log"], env) as (_, url):
        with EmotionClient(url, api_key="k" * 24, batch_size=2) as client:
            one = client.predict(photo, model="rgb224")
            assert one.model.name == "rgb224" and len(one.faces) == 1
            # five files over requests of two: every file answered once, in order
            given = [photo, images.astronaut(), b"nope", photo.read_bytes(), photo]
            results = client.predict_batch(given, model="rgb224")
            assert [type(r) for r in results] == [BatchImage] * 2 + [BatchError] + [BatchImage] * 2
            assert results[2].error.status == 400
            assert results[0].faces[0].probabilities == one.faces[0].probabilities
            with pytest.raises(ServiceError) as refused:
                client.predict(photo, model="no-such-model")
            assert refused.value.status == 404 and refused.value.problem.type.endswith("model")
        with EmotionClient(url) as keyless, pytest.raises(ServiceError) as denied:
            keyless.predict(photo)
        assert denied.value.status == 401

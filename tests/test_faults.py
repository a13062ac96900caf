"""Faults: broken files at start-up, failures inside one batch item, and a graceful shutdown.

What `tests/test_api.py` and `tests/test_inference.py` already cover (a wrong sha256 or a
corrupt ONNX file through the app, a missing file for `OnnxModel`, missing detector files, a
model that emits NaN for one batch item) is not repeated here.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.runtime import NOT_LOADED
from tests import images, servers
from tests.tiny_models import GRAY48, add_model, entry_for, write_registry, write_slow_model

PHOTO = images.encode(images.astronaut(), "JPEG")
SMALL = images.encode(images.astronaut()[::8, ::8], "PNG")


def batch(client: TestClient, files: list[tuple[str, bytes]], **params: str) -> list[dict]:
    r = client.post(
        "/predict/batch",
        files=[("files", (n, d, "application/octet-stream")) for n, d in files],
        params=params,
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [n for n, _ in files]
    return results


# --- start-up with broken files ---------------------------------------------------------------


def test_unreadable_detector_files_leave_the_rest_serving(
    make_client: Callable[..., TestClient],
    tiny_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A garbage short-range file and an empty full-range file: up, not ready, reasons logged."""
    garbage, empty = tmp_path / "garbage.tflite", tmp_path / "empty.tflite"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    empty.write_bytes(b"")
    caplog.set_level(logging.INFO, logger="emotion")
    client = make_client(tiny_models_dir, detector_short_path=garbage, detector_full_path=empty)

    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "short-range face detector unavailable: The model is not a valid Flatbuffer buffer" in (
        logged
    )
    assert any(m.startswith("full-range face detector unavailable: ") for m in logged), logged
    ready = client.get("/readyz")
    assert ready.status_code == 503
    reasons = ready.json()["reasons"]  # generic: the specifics are in the log
    assert reasons == [f"detector short: {NOT_LOADED}", f"detector full: {NOT_LOADED}"]
    assert "Flatbuffer" not in ready.text and str(tmp_path) not in ready.text

    assert client.get("/healthz").status_code == 200
    r = client.post("/predict", files={"file": ("a.jpg", PHOTO)})
    assert r.status_code == 503 and r.json()["type"].endswith(":detector-unavailable")
    assert "Flatbuffer" not in r.text and "see the service log" in r.json()["detail"]
    for model in ("gray48", "rgb224"):  # every model still serves without a detector
        r = client.post(
            "/predict",
            files={"file": ("a.jpg", PHOTO)},
            params={"detector": "none", "model": model},
        )
        assert r.status_code == 200, r.text


def test_a_missing_model_file_is_logged_and_reported(
    make_client: Callable[..., TestClient], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = add_model(tmp_path, "good", GRAY48, default=True)
    gone = add_model(tmp_path, "gone", GRAY48)
    write_registry(tmp_path, [good, gone])
    (tmp_path / "gone.onnx").unlink()
    client = make_client(tmp_path)

    expected = f"file {tmp_path / 'gone.onnx'} does not exist"
    assert f"model gone 0.0.1 is unusable: {expected}" in caplog.text
    ready = client.get("/readyz")
    assert ready.json()["reasons"] == [f"model gone: {NOT_LOADED}"]
    request_id = ready.headers["x-request-id"]
    assert f"not ready (request {request_id})" in caplog.text and expected in caplog.text
    r = client.post("/predict", files={"file": ("a.jpg", PHOTO)}, params={"model": "gone"})
    assert r.status_code == 503 and "see the service log" in r.json()["detail"]
    for body in (ready.text, r.text, client.get("/models").text):
        assert str(tmp_path) not in body and ".onnx" not in body
    assert client.post("/predict", files={"file": ("a.jpg", PHOTO)}).status_code == 200


# --- one batch item fails, the others do not --------------------------------------------------


@pytest.fixture()
def fresh(make_client: Callable[..., TestClient], tiny_models_dir: Path) -> TestClient:
    """An app of its own, so monkeypatching its detector or model affects no other test."""
    return make_client(tiny_models_dir)


def test_a_crash_while_preparing_one_image_fails_only_that_item(
    fresh: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for detector in fresh.app.state.runtime.detectors.values():  # whichever the query uses

        def detect(rgb: np.ndarray, real=detector.detect) -> list:
            if rgb.shape[:2] == (64, 64):
                raise RuntimeError("detector exploded")
            return real(rgb)

        detector.detect = detect
    results = batch(fresh, [("a.jpg", PHOTO), ("boom.png", SMALL), ("b.jpg", PHOTO)])
    assert len(results[0]["faces"]) == 1 and len(results[2]["faces"]) == 1
    error = results[1]["error"]
    assert error["status"] == 500 and error["type"].endswith(":processing-failed")
    assert "exploded" not in error["detail"]  # internals stay in the log
    assert "processing boom.png failed" in caplog.text and "detector exploded" in caplog.text


def test_inference_raising_for_one_image_fails_only_that_item(fresh: TestClient) -> None:
    """The shared call fails, each image is retried alone, and only the poisoned one fails."""
    model = fresh.app.state.runtime.catalog.states["gray48"].model
    real = model.predict

    def predict(x: np.ndarray, observe: Callable[[float], None] | None = None) -> np.ndarray:
        if (x > 0.999).all(axis=(1, 2, 3)).any():  # an all-white face
            raise RuntimeError("onnxruntime: bad input")
        return real(x, observe)

    model.predict = predict
    white = images.encode(np.full((64, 64, 3), 255, np.uint8), "PNG")
    results = batch(fresh, [("a.jpg", PHOTO), ("w.png", white), ("b.jpg", PHOTO)], detector="none")
    assert [len(x.get("faces", [])) for x in results] == [1, 0, 1]
    assert results[1]["error"]["type"].endswith(":inference-failed")


def test_a_transient_inference_failure_costs_no_result(fresh: TestClient) -> None:
    model = fresh.app.state.runtime.catalog.states["gray48"].model
    real, calls = model.predict, []

    def flaky(x: np.ndarray, observe: Callable[[float], None] | None = None) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("transient")
        return real(x, observe)

    model.predict = flaky
    results = batch(fresh, [("a.jpg", PHOTO), ("b.jpg", PHOTO)], detector="none")
    assert [len(x["faces"]) for x in results] == [1, 1]
    assert calls == [2, 1, 1]  # the batched call, then each image alone


# --- graceful shutdown of a real server -------------------------------------------------------


def start_server(
    tmp_path: Path, assets_dir: Path, trips: int, *args: str
) -> tuple[subprocess.Popen, str, Path]:
    """`python -m app` serving one slow model; returns once /readyz is 200."""
    models = tmp_path / "models"
    models.mkdir()
    sha = write_slow_model(models / "slow.onnx", trips)
    write_registry(models, [entry_for("slow", "slow.onnx", sha, GRAY48, default=True)])
    env = {
        "EMOTION_MODELS_DIR": str(models),
        "EMOTION_ASSETS_DIR": str(assets_dir),
        "EMOTION_WORKER_THREADS": "2",
        "EMOTION_INFERENCE_THREADS": "1",
        "EMOTION_LOG_LEVEL": "info",
    }
    log = tmp_path / "server.log"
    proc, url = servers.start_server(["app", *args], env, log)
    return proc, url, log


def send_batch_then_sigterm(
    proc: subprocess.Popen, url: str, n_files: int
) -> tuple[httpx.Response | Exception, float]:
    """POST a batch in a thread, SIGTERM the server while it is in flight, wait for the answer.

    Returns the response (or the client's exception) and the seconds from SIGTERM to exit.
    """
    answer: list[httpx.Response | Exception] = []

    def post() -> None:
        files = [("files", (f"{i:02d}.png", SMALL, "image/png")) for i in range(n_files)]
        try:
            answer.append(
                httpx.post(
                    f"{url}/predict/batch", files=files, params={"detector": "none"}, timeout=60
                )
            )
        except Exception as e:  # noqa: BLE001 - the test reports whatever the client saw
            answer.append(e)

    sender = threading.Thread(target=post)
    sender.start()
    deadline = time.monotonic() + 30
    while "emotion_predict_in_flight 1.0" not in httpx.get(f"{url}/metrics", timeout=5).text:
        assert time.monotonic() < deadline and sender.is_alive(), "the batch never went in flight"
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the multi-second model call
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    sender.join(timeout=60)
    proc.wait(timeout=60)
    return answer[0], time.monotonic() - t0


def test_sigterm_lets_the_batch_in_flight_finish_then_exits_0(
    tmp_path: Path, assets_dir: Path
) -> None:
    proc, url, log = start_server(tmp_path, assets_dir, trips=10_000)
    try:
        response, _ = send_batch_then_sigterm(proc, url, n_files=32)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [x["filename"] for x in results] == [f"{i:02d}.png" for i in range(32)]
    assert all(len(x["faces"]) == 1 for x in results)
    assert proc.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    stop = next(i for i, x in enumerate(lines) if "Shutting down" in x)
    answered = next(i for i, x in enumerate(lines) if '"POST /predict/batch" 200' in x)
    assert stop < answered, "the batch should have been answered after the shutdown began"
    assert "Finished server process" in lines[-1] or any("Finished server" in x for x in lines)


def test_a_request_past_the_graceful_timeout_cannot_hold_up_shutdown(
    tmp_path: Path, assets_dir: Path
) -> None:
    proc, url, log = start_server(tmp_path, assets_dir, 25_000, "--timeout-graceful-shutdown", "1")
    try:
        response, exit_seconds = send_batch_then_sigterm(proc, url, n_files=32)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()
    assert "timeout graceful shutdown exceeded" in log.read_text()
    # Cancelled after 1 s. The model call already running on a worker thread (several
    # seconds, so that even a fast machine is still in it at 1 s) is waited for by the
    # lifespan's pool shutdown: the models are released only once no thread uses them.
    assert exit_seconds < 40, exit_seconds
    assert isinstance(response, Exception) or response.status_code != 200

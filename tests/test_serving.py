"""Issue 28's over-the-wire attacks on `python -m app`, on loopback with small limits.

Silent and slow-header connections are closed, oversized headers get a 431, connections
past the cap a 503, slow bodies neither hold in-flight slots nor stay open past the body
time-out, and SIGTERM ends within the configured grace period, answering what is still
running with a 503 problem. Each runs under both of uvicorn's HTTP/1.1 implementations.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import images
from tests.servers import running_server, start_server, stop_server
from tests.tiny_models import tiny_registry

PHOTO = images.encode(images.astronaut()[::4, ::4], "JPEG")
LIMITS = {
    "EMOTION_HEADER_TIMEOUT_S": "1",
    "EMOTION_MAX_CONNECTIONS": "12",
    "EMOTION_MAX_HEADER_BYTES": "8192",
    "EMOTION_BODY_TIMEOUT_S": "2",
    "EMOTION_MAX_IN_FLIGHT": "2",
    "EMOTION_WORKER_THREADS": "1",
    "EMOTION_INFERENCE_THREADS": "1",
}


def _env(tmp: Path, assets_dir: Path, **extra: str) -> dict[str, str]:
    models = tmp / "models"
    tiny_registry(models)
    return {
        "EMOTION_MODELS_DIR": str(models),
        "EMOTION_ASSETS_DIR": str(assets_dir),
        **LIMITS,
        **extra,
    }


@pytest.fixture(scope="module", params=["h11", "httptools"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, assets_dir: Path
) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp(f"serving-{request.param}")
    env = _env(tmp, assets_dir)
    with running_server(["app", "--http", request.param], env, tmp / "server.log") as (_, url):
        host, port = url.removeprefix("http://").split(":")
        yield url, int(port)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def problem_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head.lower(), raw[:300]
    return int(head.split()[1]), json.loads(body)


def test_a_silent_connection_is_closed(server: tuple[str, int]) -> None:
    with connect(server[1]) as sock:
        t0 = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - t0 < 3.0


def test_headers_that_never_finish_get_a_408(server: tuple[str, int]) -> None:
    with connect(server[1]) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = time.monotonic()
        status, body = problem_of(read_all(sock))
        assert status == 408 and body["type"].endswith(":header-timeout")
        assert time.monotonic() - t0 < 3.0


def test_oversized_headers_get_a_431_at_once(server: tuple[str, int]) -> None:
    url, port = server
    with connect(port) as sock:
        t0 = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000)
        status, body = problem_of(read_all(sock))
        assert status == 431 and body["type"].endswith(":headers-too-large")
        assert time.monotonic() - t0 < 3.0
    assert httpx.get(f"{url}/healthz", headers={"X-Fine": "a" * 4000}).status_code == 200


def test_connections_past_the_cap_get_a_503(server: tuple[str, int]) -> None:
    url, port = server
    held = [connect(port) for _ in range(12)]
    try:
        with connect(port) as extra:
            status, body = problem_of(read_all(extra))
            assert status == 503 and body["type"].endswith(":too-many-connections")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{url}/healthz").status_code == 200


def slow_upload(port: int) -> socket.socket:
    """A /predict whose body stops after a few bytes."""
    sock = connect(port)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
    )
    return sock


def test_slow_bodies_hold_no_slot_and_time_out(server: tuple[str, int]) -> None:
    """More slow senders than in-flight slots: a normal /predict still answers 200."""
    url, port = server
    slow = [slow_upload(port) for _ in range(4)]
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        r = httpx.post(f"{url}/predict", files={"file": ("a.jpg", PHOTO)}, timeout=10)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 2.0
        for sock in slow:
            status, body = problem_of(read_all(sock))
            assert status == 408 and body["type"].endswith(":body-timeout")
    finally:
        for sock in slow:
            sock.close()


def test_sigterm_ends_within_the_grace_period_with_a_503(tmp_path: Path, assets_dir: Path) -> None:
    env = _env(tmp_path, assets_dir, EMOTION_GRACEFUL_SHUTDOWN_S="1", EMOTION_BODY_TIMEOUT_S="60")
    proc, url = start_server(["app"], env, tmp_path / "server.log")
    try:
        sock = slow_upload(int(url.rsplit(":", 1)[1]))
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status, body = problem_of(read_all(sock))
        assert status == 503 and body["type"].endswith(":shutting-down")
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 1.0 + 3.0
        sock.close()
    finally:
        stop_server(proc)

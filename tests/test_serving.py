"""Issue 28's over-the-wire attacks on `python -m app`, on loopback with small limits.

Silent and slow-header connections are closed, oversized headers get a 431, connections
past the cap a 503, slow bodies neither hold in-flight slots nor stay open past the body
time-out, and SIGTERM ends within the configured grace period, answering what is still
running with a 503 problem; the connection guards are tested under both of uvicorn's HTTP/1.1
implementations. Two concurrent annotated PNGs of 40 megapixels stay under 1.5 GB.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

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


def test_cpu_bombs_are_answered_fast_and_others_keep_their_pace(server: tuple[str, int]) -> None:
    """Scan-bomb JPEGs and a many-page TIFF sent together with a normal /predict."""
    url = server[0]
    files = {"file": ("a.jpg", PHOTO)}
    t0 = time.monotonic()
    assert httpx.post(f"{url}/predict", files=files, timeout=10).status_code == 200
    usual = time.monotonic() - t0
    bombs = [images.many_scan_jpeg(5000, side=512)] * 2 + [images.many_page_tiff(20_000)]

    def send(data: bytes) -> tuple[int, float]:
        start = time.monotonic()
        r = httpx.post(f"{url}/predict", files={"file": ("x", data)}, timeout=30)
        return r.status_code, time.monotonic() - start

    with ThreadPoolExecutor(1) as pool:  # one attacker: max_in_flight is 2 here
        attack = pool.submit(lambda: [send(data) for data in bombs])
        status, took = send(PHOTO)
        assert status == 200 and took < usual + 1.0
        answers = attack.result()
    assert [s for s, _ in answers] == [422, 422, 200]
    assert all(t < 3.0 for _, t in answers), answers


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


def peak_rss_mib(pid: int, stop: threading.Event, out: list[float]) -> None:
    """Sample the process's resident memory until `stop` is set; the peak goes to `out`."""
    while not stop.is_set():
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    out[0] = max(out[0], int(line.split()[1]) / 1024)
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_two_annotated_pngs_of_40_megapixels_stay_under_1_5_gb(
    tmp_path: Path, assets_dir: Path
) -> None:
    upload = images.encode(Image.new("L", (6300, 6300), 120), "PNG")  # 40 MP in about 50 KB
    env = _env(tmp_path, assets_dir, EMOTION_WORKER_THREADS="2")
    with running_server(["app"], env, tmp_path / "server.log") as (proc, url):
        stop, peak = threading.Event(), [0.0]
        sampler = threading.Thread(target=peak_rss_mib, args=(proc.pid, stop, peak))
        sampler.start()

        def annotated(_: int) -> httpx.Response:
            return httpx.post(
                f"{url}/predict/annotated",
                params={"format": "png"},
                files={"file": ("big.png", upload)},
                timeout=60,
            )

        try:
            with ThreadPoolExecutor(2) as pool:
                replies = list(pool.map(annotated, range(2)))
        finally:
            stop.set()
            sampler.join()
    assert [r.status_code for r in replies] == [200, 200]
    assert all(len(r.content) < 2_000_000 for r in replies)
    assert peak[0] < 1536, f"peak RSS {peak[0]:.0f} MiB"

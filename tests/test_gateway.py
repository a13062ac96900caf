"""The nginx gateway (docker/nginx.conf) in front of two real instances of the service.

Two uvicorn instances start through the image's own entry point (docker/entrypoint.sh) on
loopback ports, serving the tiny generated ONNX models of tests/tiny_models.py and the real
MediaPipe detectors under root path /emotion, with only the packages the image installs
importable (tests/serving_env.py).
The project's nginx.conf runs under the system nginx with only the upstream addresses, the
listen port, the pid file and the temp paths substituted. Which instance answered a request
is read from each instance's own access log, where the app writes `request_id=<id>`.

Needs Debian's nginx (`apt-get install -y --no-install-recommends nginx`); skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import pytest

from tests.images import astronaut, encode
from tests.nginx_gateway import (
    NGINX,
    PREFIX,
    START_TIMEOUT_S,
    Gateway,
    running_gateway,
    send,
    wait_until,
)
from tests.servers import free_port
from tests.serving_env import import_guard_dir

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

pytestmark = pytest.mark.skipif(
    NGINX is None,
    reason="the nginx binary is absent (apt-get install -y --no-install-recommends nginx)",
)


# --- processes -------------------------------------------------------------------------


@dataclass
class Instance:
    port: int
    proc: subprocess.Popen
    log: Path

    def served(self, request_id: str) -> bool:
        return f"request_id={request_id}" in self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def instances(tmp_path_factory, tiny_models_dir, assets_dir) -> Iterator[list[Instance]]:
    work = tmp_path_factory.mktemp("instances")
    guard = import_guard_dir(work / "guard")  # only what the image has is importable
    bin_dir = str(Path(sys.executable).parent)  # `python` for the entry point
    started: list[Instance] = []
    try:
        for i in range(2):
            port = free_port()
            log = work / f"instance{i}.log"
            env = {
                **os.environ,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": str(guard),
                "PYTHONUNBUFFERED": "1",
                "EMOTION_HOST": "127.0.0.1",
                "EMOTION_PORT": str(port),
                "FORWARDED_ALLOW_IPS": "127.0.0.1",
                "EMOTION_MODELS_DIR": str(tiny_models_dir),
                "EMOTION_ASSETS_DIR": str(assets_dir),
                "EMOTION_ROOT_PATH": PREFIX,
                "EMOTION_INFERENCE_THREADS": "1",
                "EMOTION_WORKER_THREADS": "2",
                "EMOTION_LOG_LEVEL": "info",
            }
            if i == 0:  # answers detector=full with 503: the retry test uses that
                env["EMOTION_DETECTOR_FULL_PATH"] = str(work / "missing-full-range.tflite")
            env.pop("EMOTION_API_KEY", None)
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    ["sh", str(ENTRYPOINT)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            started.append(Instance(port, proc, log))
        deadline = time.monotonic() + START_TIMEOUT_S
        for n, inst in enumerate(started):
            url = f"http://127.0.0.1:{inst.port}/healthz"
            wait_until(
                lambda url=url: httpx.get(url, timeout=2, trust_env=False).status_code == 200,
                deadline,
                f"instance {n}",
                inst.proc,
                inst.log,
            )
        yield started
    finally:
        for inst in started:
            if inst.proc.poll() is None:
                inst.proc.send_signal(signal.SIGTERM)
        for inst in started:
            try:
                inst.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def gateway(instances) -> Iterator[Gateway]:
    with running_gateway([i.port for i in instances]) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def image() -> bytes:
    """The astronaut's face, small: predicted with detector=none (the whole image)."""
    return encode(astronaut()[20:260, 110:350], "PNG")


# --- helpers ---------------------------------------------------------------------------


def predict(client: httpx.Client, image: bytes, request_id: str | None = None) -> httpx.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return send(
        client,
        "POST",
        f"{PREFIX}/predict",
        params={"detector": "none"},
        files={"file": ("face.png", image, "image/png")},
        headers=headers,
    )


def served_by(instances: list[Instance], request_id: str, wait: float = 3.0) -> list[int]:
    """Indexes of the instances whose access log has this request id (logs lag a little)."""
    deadline = time.monotonic() + wait
    while True:
        found = [n for n, inst in enumerate(instances) if inst.served(request_id)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def new_id() -> str:
    return f"gw-test-{uuid.uuid4().hex}"


# --- tests (in order: the last one kills an instance) ----------------------------------


def test_predict_through_gateway(client, instances):
    """The whole photo, through the real short-range face detector."""
    rid = new_id()
    response = send(
        client,
        "POST",
        f"{PREFIX}/predict",
        files={"file": ("astronaut.jpg", encode(astronaut()), "image/jpeg")},
        headers={"X-Request-ID": rid},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "gray48"
    (face,) = body["faces"]
    assert face["detected"] is True and abs(sum(face["probabilities"].values()) - 1) <= 3.5e-4
    assert response.headers["X-Request-ID"] == rid
    assert len(served_by(instances, rid)) == 1  # the app's log line has the same id


def test_annotated_photo_through_gateway(client):
    """Its own location: a photo over the 1 MiB default body cap still reaches a replica."""
    photo = encode(cv2.resize(astronaut(), (1200, 1200)), "PNG")
    assert len(photo) > 1024 * 1024
    response = send(
        client,
        "POST",
        f"{PREFIX}/predict/annotated",
        files={"file": ("big.png", photo, "image/png")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["X-Faces"] == "1" and response.content[:2] == b"\xff\xd8"


def test_docs_and_openapi_through_gateway(client):
    docs = send(client, "GET", f"{PREFIX}/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    links = re.findall(r"""url:\s*['"]([^'"]+openapi\.json)['"]""", docs.text)
    assert links == [f"{PREFIX}/openapi.json"], links
    spec = send(client, "GET", links[0])
    assert spec.status_code == 200, spec.text
    spec = spec.json()
    assert "/predict" in spec["paths"] and "/predict/batch" in spec["paths"]
    assert {"url": PREFIX} in spec.get("servers", []), spec.get("servers")  # "Try it out"
    assert send(client, "GET", f"{PREFIX}/models").json()  # an API route through the prefix


def test_probes_and_metrics_on_the_replicas_not_the_gateway(client, instances):
    """The container HEALTHCHECK and Prometheus reach each replica directly, without the
    /emotion prefix; the gateway does not publish /metrics."""
    inst = instances[1]
    env = {"PATH": os.environ.get("PATH", ""), "EMOTION_PORT": str(inst.port)}
    check = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    metrics = httpx.get(f"http://127.0.0.1:{inst.port}/metrics", timeout=5, trust_env=False)
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    assert send(client, "GET", f"{PREFIX}/metrics").status_code == 404


def test_request_id_generated_and_sanitized_by_gateway(client, instances, image):
    response = predict(client, image)
    rid = response.headers["X-Request-ID"]
    assert response.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", rid), rid
    assert len(served_by(instances, rid)) == 1
    # An id unsafe to log is replaced by the gateway, consistently in response and log.
    response = predict(client, image, 'bad id "quoted"')
    rid = response.headers["X-Request-ID"]
    assert response.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", rid), rid
    assert len(served_by(instances, rid)) == 1


def test_body_limits(client, instances, gateway):
    # Over the gateway's cap for /predict: nginx answers 413 itself; no instance sees it.
    rid = new_id()
    response = send(
        client,
        "POST",
        f"{PREFIX}/predict",
        content=b"\0" * (11 * 1024 * 1024),
        headers={"Content-Type": "application/octet-stream", "X-Request-ID": rid},
    )
    assert response.status_code == 413
    assert "text/html" in response.headers["content-type"] and "nginx" in response.text
    assert response.headers["X-Request-ID"] == rid
    assert served_by(instances, rid, wait=1.0) == []
    # Under the gateway's cap but over the app's own (file limit + multipart allowance):
    # passed through, and the app refuses it with its problem+json.
    rid = new_id()
    response = send(
        client,
        "POST",
        f"{PREFIX}/predict",
        files={"file": ("big.png", b"\0" * 10_200_000, "image/png")},
        headers={"X-Request-ID": rid},
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["request_id"] == rid == response.headers["X-Request-ID"]
    assert len(served_by(instances, rid)) == 1


def test_requests_spread_over_both_instances(client, instances, image):
    ids = [new_id() for _ in range(8)]
    for rid in ids:
        assert predict(client, image, rid).status_code == 200
    hits = Counter(n for rid in ids for n in served_by(instances, rid))
    assert set(hits) == {0, 1}, hits
    assert sum(hits.values()) == len(ids)


def gateway_log(gateway: Gateway, ids: list[str]) -> list[dict]:
    """The gateway's JSON access-log entries for these request ids."""
    time.sleep(0.2)  # nginx writes its access log line after the response
    lines = [json.loads(x) for x in gateway.log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x["request_id"] in ids]


def test_503_is_retried_on_the_other_instance(client, instances, image, gateway):
    """Instance 0 has no full-range detector and answers 503; the POST is replayed on 1.

    nginx only replays a POST that already reached a replica because the config says
    `non_idempotent` (predictions have no side effects).
    """
    ids = [new_id() for _ in range(6)]
    for rid in ids:
        response = send(
            client,
            "POST",
            f"{PREFIX}/predict",
            params={"detector": "full"},
            files={"file": ("face.png", image, "image/png")},
            headers={"X-Request-ID": rid},
        )
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == rid
    retried = [x for x in gateway_log(gateway, ids) if x["upstream_status"] == "503, 200"]
    assert retried, gateway_log(gateway, ids)
    assert all(served_by(instances, x["request_id"]) == [0, 1] for x in retried)
    # After max_fails the gateway skips instance 0 for fail_timeout, then tries it again.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rid = new_id()
        assert send(client, "GET", f"{PREFIX}/models", headers={"X-Request-ID": rid}).is_success
        if served_by(instances, rid) == [0]:
            break
        time.sleep(0.3)
    else:
        pytest.fail("instance 0 never got traffic again after its 503s")


def test_rate_limit_answers_429(client, instances):
    """10 r/s with a burst of 20 per client address: request 22 of a quick burst is refused."""
    time.sleep(2.5)  # let this client's bucket drain (20 excess requests at 10 r/s)
    statuses = []
    first_429 = None
    start = time.monotonic()
    for _ in range(200):  # bounded: even at 20 ms per request the burst ends within 100
        response = client.get(f"{PREFIX}/healthz")
        statuses.append(response.status_code)
        if response.status_code == 429:
            first_429 = response
            break
    elapsed = time.monotonic() - start
    assert first_429 is not None, Counter(statuses)
    assert set(statuses) == {200, 429}, Counter(statuses)
    # 1 + burst at once, plus what the 10 r/s rate refilled while the burst ran.
    assert 21 <= statuses.count(200) <= 21 + 10 * elapsed + 1, (Counter(statuses), elapsed)
    assert "text/html" in first_429.headers["content-type"]  # nginx's page, not the app's
    rid = first_429.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and served_by(instances, rid, wait=1.0) == []


def test_failover_when_an_instance_dies(client, instances, image, gateway):
    victim = instances[0]
    victim.proc.kill()
    victim.proc.wait(timeout=10)
    ids = [new_id() for _ in range(8)]
    for rid in ids:
        response = predict(client, image, rid)
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == rid
    assert all(served_by(instances, rid) == [1] for rid in ids)
    # nginx tried the dead instance, failed to connect, and moved on to the live one.
    retried = [x for x in gateway_log(gateway, ids) if "," in x["upstream"]]
    assert retried, gateway_log(gateway, ids)
    dead = f"127.0.0.1:{victim.port}"
    assert all(x["upstream"].split(", ")[0] == dead for x in retried)

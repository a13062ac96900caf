"""The real image, built from the project's Dockerfile, behind the project's gateway.

`docker/verify-image.sh build` builds the image with buildah (cached between runs), two
replicas of it run with `docker/verify-image.sh run` on loopback ports, serving the shipped
models, and the nginx gateway (docker/nginx.conf) stands in front of them, as compose sets
them up. The last test kills a replica and checks that the gateway keeps answering.

Needs root, Debian's buildah, podman, debootstrap and nginx (`.ci/run` installs them).
Skipped without them, except where EMOTION_REQUIRE_IMAGE=1 (as in CI): then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.registry import load_registry
from tests.images import astronaut, encode
from tests.nginx_gateway import NGINX, PREFIX, running_gateway, send
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "verify-image.sh"
TOOLS = ("buildah", "podman", "debootstrap")
READY_TIMEOUT_S = 120.0
# What compose gives each replica (docker-compose.yml), on a 2-core machine for two replicas.
REPLICA_ENV = {
    "EMOTION_ROOT_PATH": PREFIX,
    "FORWARDED_ALLOW_IPS": "127.0.0.1",
    "EMOTION_TRUST_FORWARDED_FOR": "true",
    "EMOTION_INFERENCE_THREADS": "1",
    "EMOTION_WORKER_THREADS": "2",
}


def _missing() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if NGINX is None:
        missing.append("nginx")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


if _missing() and os.environ.get("EMOTION_REQUIRE_IMAGE") != "1":
    pytestmark = pytest.mark.skip(reason=f"needs {', '.join(_missing())} (see .ci/run)")


@pytest.fixture(scope="module")
def built() -> None:
    missing = _missing()
    if missing:
        pytest.fail(f"EMOTION_REQUIRE_IMAGE=1 but {', '.join(missing)} missing")
    result = subprocess.run(
        [str(SCRIPT), "build"], capture_output=True, text=True, timeout=1200, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # buildah, its chroot runtime and uvicorn alike
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_replica(port: int, log: Path) -> Replica:
    args = [str(SCRIPT), "run", str(port)]
    for name, value in REPLICA_ENV.items():
        args += ["-e", f"{name}={value}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Replica(port, proc, log)


def wait_ready(replica: Replica, deadline: float) -> None:
    url = f"http://127.0.0.1:{replica.port}/readyz"
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            pytest.fail(f"replica exited with {replica.proc.returncode}: {replica.log.read_text()}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"replica not ready in {READY_TIMEOUT_S:.0f}s: {replica.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def replicas(built, tmp_path_factory) -> Iterator[list[Replica]]:
    work = tmp_path_factory.mktemp("replicas")
    started = [start_replica(free_port(), work / f"replica{i}.log") for i in range(2)]
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for replica in started:
            wait_ready(replica, deadline)
        yield started
    finally:
        for replica in started:
            replica.stop()
        for replica in started:  # a replica killed outright leaves its container behind
            subprocess.run(
                ["buildah", "--storage-driver", "vfs", "rm", f"emotion-replica-{replica.port}"],
                capture_output=True,
                check=False,
            )


@pytest.fixture(scope="module")
def client(replicas) -> Iterator[httpx.Client]:
    with (
        running_gateway([r.port for r in replicas]) as gateway,
        httpx.Client(base_url=gateway.url, timeout=60, trust_env=False) as c,
    ):
        yield c


def photo() -> bytes:
    return encode(astronaut(), "JPEG")


def predict(client: httpx.Client) -> httpx.Response:
    return send(
        client,
        "POST",
        f"{PREFIX}/predict",
        files={"file": ("astronaut.jpg", photo(), "image/jpeg")},
    )


def test_gateway_reports_both_replicas_ready(client, replicas):
    body = send(client, "GET", f"{PREFIX}/readyz").json()
    assert body["status"] == "ready" and set(body["detectors"]) == {"short", "full"}
    shipped = {entry.name for entry in load_registry(ROOT / "models").models}
    assert set(body["models"]) == shipped  # the image serves exactly what models/ ships


def test_predict_a_real_photo_with_the_shipped_default(client):
    response = predict(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == load_registry(ROOT / "models").default.name
    assert len(body["faces"]) == 1
    probabilities = body["faces"][0]["probabilities"]
    assert abs(sum(probabilities.values()) - 1.0) < 1e-3


def test_batch_through_the_gateway(client):
    files = [
        ("files", ("a.jpg", photo(), "image/jpeg")),
        ("files", ("b.png", encode(astronaut()[20:260, 110:350], "PNG"), "image/png")),
    ]
    response = send(client, "POST", f"{PREFIX}/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpg", "b.png"]
    assert all(r["faces"] for r in results)


def test_bad_input_is_a_problem_document(client):
    response = send(
        client,
        "POST",
        f"{PREFIX}/predict",
        files={"file": ("notes.jpg", b"this is not an image", "image/jpeg")},
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = json.loads(response.text)
    assert problem["status"] == response.status_code and problem["title"]


def test_gateway_keeps_answering_when_a_replica_is_lost(client, replicas):
    replicas[0].stop(signal.SIGKILL)
    statuses = [predict(client).status_code for _ in range(10)]
    # nginx retries a refused connection on the live replica: every request is answered,
    # and no 5xx but an honest 503 (a replica at its in-flight limit) may ever come back.
    assert all(s == 200 or s == 503 for s in statuses), statuses
    assert statuses.count(200) == len(statuses), statuses

"""The project's nginx gateway (docker/nginx.conf) started in front of services on loopback.

The configuration runs under the system nginx with only the upstream addresses, the listen
port, the pid file and the temp paths substituted. Shared by the gateway test (two uvicorn
processes) and the image test (two replicas of the built image).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "docker" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
PREFIX = "/emotion"
START_TIMEOUT_S = 90.0


def wait_until(check, deadline: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} not up after {START_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}")


def render_nginx_conf(upstreams: list[int], listen: int, prefix: Path) -> str:
    """docker/nginx.conf with loopback upstreams, port, pid and temp paths; nothing else."""
    text = NGINX_CONF.read_text()

    def sub(pattern: str, repl, text: str) -> str:
        new, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == 1, f"{pattern!r} matched {n} times in {NGINX_CONF}"
        return new

    def servers(m: re.Match) -> str:
        # `resolve` is for names (compose DNS); loopback addresses need none.
        params = m.group("params").replace(" resolve", "")
        return "\n".join(f"{m.group('indent')}server 127.0.0.1:{p}{params};" for p in upstreams)

    text = sub(r"^(?P<indent>\s*)server api:8000(?P<params>[^;]*);", servers, text)
    text = sub(r"^(\s*)listen 8080;", rf"\g<1>listen 127.0.0.1:{listen};", text)
    text = sub(r"^pid /tmp/nginx\.pid;", f"pid {prefix}/nginx.pid;", text)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        text = sub(
            rf"^(\s*){kind}_temp_path /tmp/(\S+);", rf"\g<1>{kind}_temp_path {prefix}/\g<2>;", text
        )
    return text


@dataclass
class Gateway:
    url: str
    log: Path


@contextmanager
def running_gateway(upstreams: list[int]) -> Iterator[Gateway]:
    """nginx with the project's configuration in front of loopback ports `upstreams`."""
    # Not under pytest's 0700 tmp dirs: started as root, nginx's workers run as `nobody`
    # and must reach the temp folders it creates here.
    prefix = Path(tempfile.mkdtemp(prefix="emotion-gateway-"))
    prefix.chmod(0o755)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(upstreams, port, prefix))
    log = prefix / "nginx.log"
    cmd = [NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: httpx.get(f"{url}/nginx-health", timeout=2, trust_env=False).status_code == 200,
            time.monotonic() + 20,
            "nginx",
            proc,
            log,
        )
        yield Gateway(url, log)
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(prefix, ignore_errors=True)


def send(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
    """A request through the gateway, waiting out the rate limit (tested on its own)."""
    for _ in range(50):
        response = client.request(method, url, **kwargs)
        if response.status_code != 429:
            return response
        time.sleep(0.2)
    return response

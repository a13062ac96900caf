"""Real service processes for tests and benchmark scripts: a free port, start, wait, stop.

One place for what every over-the-wire check needs, so a change to how the service starts
(or how readiness is judged) is made once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    module_args: Sequence[str],
    env: Mapping[str, str],
    log: Path | None = None,
    ready_within_s: float = 90.0,
    cwd: Path = REPO,
) -> tuple[subprocess.Popen, str]:
    """`python -m MODULE_ARGS --host 127.0.0.1 --port <free>` in `cwd` (another checkout
    serves its own code), with `env` over ours.

    Returns the process and its base URL once GET /readyz answers 200. Output goes to `log`
    (None: discarded). A server that exits or is not ready in time is stopped, and the
    RuntimeError says why, with the log.
    """
    port = free_port()
    cmd = [sys.executable, "-m", *module_args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") if log else open(os.devnull, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=os.environ | dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within_s
    while True:
        problem = None
        if proc.poll() is not None:
            problem = f"the server exited with {proc.returncode}"
        elif time.monotonic() > deadline:
            problem = f"the server was not ready in {ready_within_s:.0f} s"
        if problem:
            stop_server(proc)
            raise RuntimeError(f"{problem}:\n{log.read_text() if log else '(no log kept)'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it outlasts `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def running_server(
    module_args: Sequence[str],
    env: Mapping[str, str],
    log: Path | None = None,
    ready_within_s: float = 90.0,
    cwd: Path = REPO,
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`start_server`, stopped on leaving the block."""
    proc, url = start_server(module_args, env, log, ready_within_s, cwd)
    try:
        yield proc, url
    finally:
        stop_server(proc)

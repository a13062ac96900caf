"""Connection guards for `python -m app`: what uvicorn alone leaves open to slow or hostile
clients.

uvicorn never closes a connection that sends nothing, has no header size limit under
httptools (h11's applies only to one buffered event), and has no connection cap that
answers in the API's problem+json. The protocol classes here subclass uvicorn's two HTTP/1.1
protocols and add, per connection: a deadline for complete request headers (closed after
`header_timeout_s`, with a 408 when some bytes came), a cap on header bytes (431), and a
cap on open connections (503). The limits travel on `GuardedConfig`, so worker processes
(which receive the config pickled) get them too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from app.problems import PROBLEM_MEDIA_TYPE, problem_body

HEAD_END = b"\r\n\r\n"
LINGER_S = 1.0
"""How long a refused connection's remaining input is read and dropped before closing."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The per-process connection guards (from `app.settings.Settings`)."""

    header_timeout_s: float
    max_connections: int
    max_header_bytes: int


class GuardedConfig(uvicorn.Config):
    """uvicorn's configuration plus the connection limits the guarded protocols read."""

    def __init__(self, app: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


def raw_problem(status: int, slug: str, title: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    body = json.dumps(problem_body(status, slug, title, detail)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Guard:
    """Mixin over a uvicorn HTTP protocol (its `config`, `connections`, `cycle`, `transport`,
    `loop` attributes); must come first in the bases."""

    config: Any
    connections: set[Any]
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._head_bytes = 0
        self._tail = b""
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        limits: ConnectionLimits = self.config.limits
        if len(self.connections) > limits.max_connections:
            self._refuse(
                503,
                "too-many-connections",
                "Too many connections",
                "the service has too many open connections; retry shortly",
            )
            return
        self._arm()

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(
                self.config.limits.header_timeout_s, self._header_timeout
            )

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self._closed or not self._awaiting_head():
            return
        if self._head_bytes:
            self._refuse(
                408,
                "header-timeout",
                "Request headers timed out",
                "the request headers did not arrive in time",
            )
        else:
            self._close()

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        """Answer, stop sending, and close a moment later: closing with the client's unread
        bytes still queued would reset the connection and lose the answer."""
        if self._closed:
            return
        self._closed = True
        self._disarm()
        self.transport.write(raw_problem(status, slug, title, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _close(self) -> None:
        self._closed = True
        self._disarm()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._awaiting_head():
            buffered = self._tail + data
            end = buffered.find(HEAD_END)
            if end >= 0:
                self._head_bytes += max(0, end + len(HEAD_END) - len(self._tail))
                self._tail = b""
            else:
                self._head_bytes += len(data)
                self._tail = buffered[-(len(HEAD_END) - 1) :]
            if self._head_bytes > self.config.limits.max_header_bytes:
                self._refuse(
                    431,
                    "headers-too-large",
                    "Request headers too large",
                    f"the request headers exceed {self.config.limits.max_header_bytes:,} bytes",
                )
                return
            self._arm()
        super().data_received(data)  # type: ignore[misc]
        if not self._awaiting_head():
            self._head_bytes, self._tail = 0, b""
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class GuardedH11Protocol(_Guard, H11Protocol):
    """uvicorn's h11 protocol with the connection guards."""


class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
    """uvicorn's httptools protocol with the connection guards."""


PROTOCOLS: dict[str, type] = {"h11": GuardedH11Protocol, "httptools": GuardedHttpToolsProtocol}


def resolve_http(choice: str) -> str:
    """uvicorn's "auto": httptools when it is installed, else h11."""
    if choice != "auto":
        return choice
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def serve(config: GuardedConfig) -> None:
    """Run the server as `uvicorn.run` would: one process, or `config.workers` of them."""
    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
    if not server.started and config.workers == 1:
        sys.exit(STARTUP_FAILURE)

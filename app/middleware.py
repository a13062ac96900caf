"""Pure ASGI middleware: request IDs, the access log, HTTP metrics, the API key.

Pure ASGI (not `BaseHTTPMiddleware`) so nothing buffers or re-wraps streaming bodies and the
API key can be refused before a large upload is read. `RequestContext` is the outermost layer:
it tags every response with X-Request-ID (even 401s and unexpected 500s, which it answers
itself as problem+json), then writes one access-log line and the request metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logsafe import escape
from app.metrics import Metrics
from app.problems import PROBLEM_MEDIA_TYPE, problem_body

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
API_KEY_EXEMPT = frozenset({"/", "/healthz", "/readyz", "/metrics"})  # "/": the page holds no data

access_log = logging.getLogger("emotion.access")
log = logging.getLogger("emotion.http")


def request_id_from(headers: Headers) -> str:
    """The caller's X-Request-ID when it is short and plain (safe to log), else a new one."""
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def route_path(scope: Scope) -> str:
    """The request path without the mount prefix (`root_path`)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def client_address(scope: Scope, headers: Headers, trust_forwarded_for: bool) -> str:
    """The last X-Forwarded-For hop (what our proxy saw) when trusted, else the socket peer."""
    if trust_forwarded_for:
        forwarded = headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1]
    client = scope.get("client")
    return f"{client[0]}" if client else "-"


async def send_problem(
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    scope: Scope,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer directly from middleware with a problem+json body."""
    request_id = scope.get("state", {}).get("request_id")
    body = json.dumps(
        problem_body(status, slug, title, detail, request_id, scope.get("path"))
    ).encode()
    raw = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    """Request ID, access log, request metrics, and the last-resort 500 handler."""

    def __init__(self, app: ASGIApp, metrics: Metrics, trust_forwarded_for: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.trust_forwarded_for = trust_forwarded_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = request_id_from(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

        async def send_tagged(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_tagged)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when the graceful shutdown time is up.
            status = 503
            if not started:
                with contextlib.suppress(Exception):
                    await send_problem(
                        send_tagged,
                        503,
                        "shutting-down",
                        "Service shutting down",
                        "the service stopped before this request finished; retry",
                        scope,
                        {"Retry-After": "1", "Connection": "close"},
                    )
            raise
        except Exception:
            log.exception(
                "unhandled error on %s %s (request %s)",
                escape(scope.get("method")),
                escape(scope.get("path")),
                request_id,
            )
            if not started:
                await send_problem(
                    send_tagged,
                    500,
                    "internal-error",
                    "Internal server error",
                    "the server failed to process the request; see the service log",
                    scope,
                )
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "-")
            self.metrics.observe_request(method, template, status, seconds)
            access_log.info(  # every client-controlled field escaped: no forged lines
                '%s "%s %s" %d %.1fms request_id=%s',
                escape(client_address(scope, headers, self.trust_forwarded_for)),
                escape(method),
                escape(scope.get("path", "")),
                status,
                seconds * 1000.0,
                request_id,
            )


class ApiKeyCheck:
    """Refuse requests without the configured X-API-Key (constant-time comparison).

    The 401 never says whether the key was missing or wrong. Probes and metrics stay open.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) not in API_KEY_EXEMPT:
            given = Headers(scope=scope).get("x-api-key", "").encode()
            if not hmac.compare_digest(given, self.key):
                await send_problem(
                    send,
                    401,
                    "unauthorized",
                    "Unauthorized",
                    "a valid X-API-Key header is required",
                    scope,
                )
                return
        await self.app(scope, receive, send)


class RootPath:
    """Mount the app under a gateway's path prefix, as `uvicorn --root-path` would.

    The prefix is a service setting (`EMOTION_ROOT_PATH`), so it travels with the app rather
    than with each server command line; `/docs` and the OpenAPI `servers` entry follow it.
    """

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "root_path": self.root_path}
        await self.app(scope, receive, send)

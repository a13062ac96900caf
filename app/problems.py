"""RFC 9457 problem details (`application/problem+json`) for every error the API returns.

Pipeline code raises `ProblemError` (or a subclass such as `app.decode.ImageError`) without
knowing about HTTP responses; the handlers installed by `install_handlers` turn those,
FastAPI's validation errors, plain HTTP errors and anything unexpected into one body shape:
`type`, `title`, `status`, `detail`, `instance` (the request path) and `request_id`.
Unexpected exceptions are answered by `app.middleware.RequestContext`: logged with their
traceback, answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.logsafe import escape

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:emotion:problem:"

log = logging.getLogger("emotion.problems")


class ProblemError(Exception):
    """An error with everything needed to answer it as problem+json."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {slug}: {detail}")
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}

    def body(self, request_id: str | None = None, instance: str | None = None) -> dict[str, Any]:
        return problem_body(self.status, self.slug, self.title, self.detail, request_id, instance)


def problem_body(
    status: int,
    slug: str,
    title: str,
    detail: str,
    request_id: str | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if request_id is not None:
        body["request_id"] = request_id
    return body


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_response(request: Request, error: ProblemError) -> JSONResponse:
    return JSONResponse(
        error.body(request_id_of(request), request.url.path),
        status_code=error.status,
        headers=error.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _phrase(status: int) -> str | None:
    """The standard reason phrase ("Not Found"), None for a non-standard status."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def log_cause(error: BaseException, request_id: str | None) -> None:
    """Log what a generic public detail leaves out (a library's message) under the request ID."""
    cause = error.__cause__
    if cause is not None:
        log.info(
            "%s (request %s): %s: %s",
            escape(error),
            request_id,
            type(cause).__name__,
            escape(cause),
        )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    log_cause(exc, request_id_of(request))
    return problem_response(request, exc)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    phrase = _phrase(status)
    title = phrase or "Error"
    detail = str(exc.detail) if exc.detail and exc.detail != title else ""
    slug = phrase.lower().replace(" ", "-") if phrase else "http-error"
    if status == 413:
        detail = detail or "the request body is too large"
        slug, title = "request-too-large", "Request too large"
    elif status == 404:
        detail = detail or f"there is no endpoint at {request.url.path}; see /docs"
    elif status == 405:
        detail = detail or f"{request.method} is not allowed on {request.url.path}"
    detail = detail or title
    error = ProblemError(status, slug, title, detail, dict(exc.headers or {}))
    return problem_response(request, error)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
    return f"{loc}: {err.get('msg', 'invalid')}"


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    detail = "; ".join(_describe(e) for e in errors) or "invalid request"
    body = problem_body(
        422, "invalid-request", "Invalid request", detail, request_id_of(request), request.url.path
    )
    body["errors"] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    return JSONResponse(body, status_code=422, media_type=PROBLEM_MEDIA_TYPE)


def install_handlers(app: FastAPI) -> None:
    """Route errors through problem+json (unexpected ones: `app.middleware.RequestContext`)."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)

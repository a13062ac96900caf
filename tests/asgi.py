"""In-process async access to an app: lifespan started, requests over httpx's ASGI transport.

Starlette's TestClient sends one request at a time; these tests need many at once (overload,
probes during busy predictions, cancellation), so they drive the app from an event loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from app.runtime import Runtime


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (models and detectors load) and yield a client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as http:
            yield http


def runtime(app: FastAPI) -> Runtime:
    rt = app.state.runtime
    assert rt is not None, "the lifespan has not started"
    return rt


def slowed(fn: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    """`fn` that first sleeps: a stand-in for a busy model or detector."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return fn(*args, **kwargs)

    return slow


def photo_files(data: bytes, name: str = "a.jpg", field: str = "file") -> list[tuple]:
    return [(field, (name, data, "image/jpeg"))]

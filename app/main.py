"""The ASGI application: `app.main:app`, built by `create_app`.

`create_app(settings)` wires settings, routes, error handlers and middleware; the lifespan
loads detectors and models (with warm-up) before the first request and releases them at
shutdown. Tests build apps with their own `Settings`; nothing lives at module level except
the default `app` itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from app.metrics import Metrics
from app.middleware import ApiKeyCheck, RequestContext, RootPath
from app.problems import install_handlers
from app.routes import catalog, ops, page, predict
from app.routes.deps import api_key_scheme
from app.runtime import Runtime
from app.settings import Settings

DESCRIPTION = """Finds every face in a photo and returns its box and the probabilities of seven
emotions (angry, disgust, fear, happy, neutral, sad, surprise).

Errors are `application/problem+json` (RFC 9457). Every response carries `X-Request-ID`.
"""


def configure_logging(level: str) -> None:
    """Give the service's `emotion.*` loggers a handler unless the host already set one up.

    Under `python -m uvicorn` only uvicorn's own loggers are configured; without this our
    access log lines would be dropped.
    """
    logger = logging.getLogger("emotion")
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    runtime = await run_in_threadpool(Runtime.start, settings)
    app.state.metrics.in_flight.set_function(lambda: runtime.gate.active)
    app.state.runtime = runtime
    try:
        yield
    finally:
        app.state.runtime = None
        runtime.close()


def include_routes(app: FastAPI, settings: Settings) -> None:
    """Add the routers, with what depends on the settings: the API-key scheme on the routes
    the key guards (for /docs; `ApiKeyCheck` does the checking) and the batch limit in the
    OpenAPI schema. The order is the order of /docs."""
    secured = api_key_scheme(settings)
    app.include_router(catalog.router, dependencies=secured)
    app.include_router(page.router)
    app.include_router(ops.router)
    app.include_router(predict.router, dependencies=secured)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            predict.document_batch_limit(generate(), settings)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's "extending OpenAPI" hook


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Emotion recognition",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.runtime = None
    install_handlers(app)
    include_routes(app, settings)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyCheck, api_key=settings.api_key.get_secret_value())
    app.add_middleware(
        RequestContext, metrics=app.state.metrics, trust_forwarded_for=settings.trust_forwarded_for
    )
    if settings.cors_origin_list:  # outside the key check: a browser's preflight sends no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "X-Request-ID", "Content-Type"],
            expose_headers=["X-Request-ID", "X-Faces", "X-Model"],
        )
    if settings.root_path:
        app.add_middleware(RootPath, root_path=settings.root_path)  # outermost
    return app


app = create_app()

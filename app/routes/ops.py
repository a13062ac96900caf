"""What operators and orchestrators poll: /healthz, /readyz and /metrics.

Never behind the API key (`app.middleware.API_KEY_EXEMPT`): probes and scrapers carry none.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.problems import PROBLEM_MEDIA_TYPE, problem_body, request_id_of
from app.routes.deps import MaybeRuntimeDep, MetricsDep
from app.schemas import Health, Problem, Readiness

router = APIRouter()
log = logging.getLogger("emotion.routes")


@router.get("/healthz", response_model=Health, summary="Liveness: the process serves")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {}},
            "description": "not ready; `reasons` says why",
        }
    },
    summary="Readiness: detectors and every registered model loaded and warmed up",
)
def readyz(request: Request, runtime: MaybeRuntimeDep) -> Any:
    # No docstring: it would become the operation's OpenAPI description. While the service
    # starts there is no runtime yet, which is a reason to be not ready rather than an error.
    # The reasons are generic; their specifics (paths, library messages) go to the log.
    reasons = runtime.public_problems() if runtime else ["the service is still starting"]
    if reasons:
        if runtime:
            log.info("not ready (request %s): %s", request_id_of(request), runtime.problems())
        body = problem_body(
            503,
            "not-ready",
            "Not ready",
            "; ".join(reasons),
            request_id_of(request),
            request.url.path,
        )
        body["reasons"] = reasons
        return JSONResponse(body, status_code=503, media_type=PROBLEM_MEDIA_TYPE)
    assert runtime is not None and runtime.catalog is not None
    return Readiness(detectors=list(runtime.detectors), models=list(runtime.catalog.states))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=m.content_type)

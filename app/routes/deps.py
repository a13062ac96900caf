"""The dependencies the routers share, as `Annotated` aliases (`RuntimeDep`, `SettingsDep`, ...).

The lifespan objects live on `app.state` (settings and metrics from `create_app`, the runtime
from the lifespan); the `find_*`/`get_*` functions here are the only code that reads them, so
handlers declare what they need instead of reaching into `request.app.state`.

Every dependency is `async def` although none awaits anything: FastAPI runs a plain `def`
dependency (or a class) on its thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, params
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader

from app.metrics import Metrics
from app.pipeline import Fallback, Options
from app.problems import ProblemError
from app.runtime import DetectorChoice, Runtime
from app.settings import Settings


async def find_runtime(request: Request) -> Runtime | None:
    """The lifespan's `Runtime`; None while the service starts (or after it stopped)."""
    return getattr(request.app.state, "runtime", None)


async def get_runtime(request: Request) -> Runtime:
    """The lifespan's `Runtime`; 503 while the service is still starting."""
    runtime = await find_runtime(request)
    if runtime is None:
        raise ProblemError(503, "starting", "Service starting", "the service is still starting")
    return runtime


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with (`create_app`)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    """The app's own metrics registry (one per app, see `app.metrics`)."""
    metrics: Metrics = request.app.state.metrics
    return metrics


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
MaybeRuntimeDep = Annotated[Runtime | None, Depends(find_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def api_key_scheme(settings: Settings) -> list[params.Depends]:
    """The X-API-Key scheme, declared (for /docs and clients) only when a key is set.

    Documentation only: `app.middleware.ApiKeyCheck` checks the key before any route runs,
    so this dependency never refuses anything. `create_app` adds it when including the
    routers that need a key, since whether one is set is known only then.
    """
    if settings.api_key is None:
        return []
    return [Depends(APIKeyHeader(name="X-API-Key", auto_error=False))]


@dataclass(frozen=True)
class PredictQuery:
    """The query parameters every predict route shares (read by `predict_query`)."""

    model: str | None
    detector: DetectorChoice
    fallback: Fallback
    max_faces: int | None

    def options(self, runtime: Runtime) -> Options:
        """The pipeline options; called by the handler after the model is resolved, so an
        unknown model is a 404 before an out-of-range max_faces is a 422."""
        settings = runtime.settings
        max_faces = self.max_faces or settings.max_faces
        if max_faces > settings.max_faces_limit:
            # The bound is a setting, so FastAPI cannot check it; answer as if it had.
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", "max_faces"),
                        "msg": f"must be at most {settings.max_faces_limit}",
                        "type": "less_than_equal",
                    }
                ]
            )
        return Options.from_settings(
            runtime.detector(self.detector), self.fallback, max_faces, settings
        )


async def predict_query(
    model: Annotated[
        str | None, Query(description="registry name; default: the default model")
    ] = None,
    detector: Annotated[
        DetectorChoice,
        Query(
            description="auto (full-range; where faces are small or none was found, also "
            "short-range and full-range on four overlapping tiles), short-range (faces within "
            "~2 m), full-range (small or distant faces), or none (the whole image is one face)"
        ),
    ] = "auto",
    fallback: Annotated[
        Fallback,
        Query(description="whole: when no face is found, classify the whole image as one face"),
    ] = "none",
    max_faces: Annotated[
        int | None,
        Query(
            ge=1,
            description="most faces returned per image, largest first; the default and "
            "the upper bound come from the settings",
        ),
    ] = None,
) -> PredictQuery:
    """The predict routes' query, declared here for FastAPI to read and document."""
    return PredictQuery(model, detector, fallback, max_faces)


PredictQueryDep = Annotated[PredictQuery, Depends(predict_query)]


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route's dependency tree declares."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take: a misspelt `detecter=full` must not
    quietly fall back to the default detector."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter; this endpoint takes {', '.join(sorted(known))}",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
        )

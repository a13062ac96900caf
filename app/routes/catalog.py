"""/models: the registered models and whether each can serve (behind the API key, if set)."""

from __future__ import annotations

from fastapi import APIRouter

from app.routes.deps import RuntimeDep
from app.runtime import NOT_LOADED
from app.schemas import ModelInfo, ModelsResponse

router = APIRouter()


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="Registered models and whether each can serve",
)
def models(runtime: RuntimeDep) -> ModelsResponse:
    catalog = runtime.catalog
    infos = []
    for state in catalog.states.values() if catalog else []:
        e = state.entry
        infos.append(
            ModelInfo(
                name=e.name,
                version=e.version,
                default=e.name == catalog.default_name,
                description=e.description,
                input=e.input.model_dump(),
                labels=e.labels,
                output=e.output,
                metrics=e.metrics,
                loaded=state.model is not None,
                ready=state.model is not None,
                error=NOT_LOADED if state.error else None,
            )
        )
    return ModelsResponse(default=catalog.default_name if catalog else None, models=infos)

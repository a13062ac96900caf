"""/predict, /predict/annotated and /predict/batch: thin adapters between uploads and
`app.pipeline` running on the worker pool.

The routes use `PredictRoute`: the body-size cap (413 from Content-Length, or as soon as the
streamed body passes the cap) applies while the body is read, which must finish within
`body_timeout_s` (else 408); the in-flight gate (503 + Retry-After when full) is taken only
once the whole body is in, so slow senders cannot hold slots that working requests need.
The per-file byte limit is checked once parsing has measured each file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from app.annotate import MEDIA_TYPES, PictureFormat, annotate, encode
from app.inference import OnnxModel
from app.labels import EMOTIONS
from app.logsafe import escape
from app.metrics import Metrics
from app.pipeline import STAGES, PreparedImage, classify, prepare_image
from app.problems import PROBLEM_MEDIA_TYPE, ProblemError, log_cause, request_id_of
from app.routes.deps import (
    MetricsDep,
    PredictQuery,
    PredictQueryDep,
    RuntimeDep,
    SettingsDep,
    get_metrics,
    get_runtime,
    get_settings,
    refuse_unknown_query,
)
from app.runtime import Runtime
from app.schemas import (
    BatchError,
    BatchImage,
    BatchResponse,
    BoxOut,
    FaceOut,
    ImageSize,
    ItemProblem,
    ModelRef,
    PredictResponse,
    Probabilities,
    Problem,
)
from app.settings import Settings

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes allowed per file on top of max_upload_bytes for multipart headers and boundaries."""

BATCH_PATH = "/predict/batch"
DEFAULT_MAX_BATCH_FILES: int = Settings.model_fields["max_batch_files"].default
DECIMALS = 4

log = logging.getLogger("emotion.routes")

_PROBLEM = {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_PROBLEM, "description": "empty, corrupt, truncated or non-image upload"},
    401: {**_PROBLEM, "description": "missing or wrong X-API-Key (when a key is configured)"},
    404: {**_PROBLEM, "description": "unknown ?model= name"},
    413: {
        **_PROBLEM,
        "description": "upload over the byte limit, image over the pixel limit, or too many files",
    },
    408: {**_PROBLEM, "description": "the request body did not arrive in time"},
    415: {**_PROBLEM, "description": "image format or colour mode not supported"},
    422: {
        **_PROBLEM,
        "description": "missing file field, invalid query value, or an image too costly to "
        "decode (a JPEG with too many progressive scans)",
    },
    503: {
        **_PROBLEM,
        "description": "overloaded (Retry-After), or the model/detector is not loaded",
    },
}


def _batch_files_description(max_batch_files: int) -> str:
    return f"1 to {max_batch_files} images (max_batch_files)"


def _capped(receive: Receive, cap: int) -> Receive:
    """Wrap `receive` so reading past `cap` body bytes aborts the request with 413."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise StarletteHTTPException(413, f"the request body exceeds {cap:,} bytes")
        return message

    return limited


async def read_form(request: Request, timeout_s: float) -> FormData:
    """Read and parse the whole multipart body now (Starlette keeps it for the handler).

    A parse failure is answered as FastAPI answers it; a body still arriving after
    `timeout_s` is a 408.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await request.form()
    except TimeoutError as e:
        raise ProblemError(
            408,
            "body-timeout",
            "Request body timed out",
            f"the request body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"},
        ) from e
    except (StarletteHTTPException, ClientDisconnect):
        raise
    except Exception as e:
        raise StarletteHTTPException(400, "There was an error parsing the body") from e


class PredictRoute(APIRoute):
    """A predict route: body cap and time-out while the body is read, then the in-flight gate.

    This runs outside FastAPI's dependency injection (before the body exists), so it calls
    the dependency functions directly.
    """

    def body_cap(self, settings: Settings) -> int:
        files = settings.max_batch_files if self.path == BATCH_PATH else 1
        return files * (settings.max_upload_bytes + MULTIPART_OVERHEAD)

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def gated(request: Request) -> Response:
            runtime = await get_runtime(request)
            settings = await get_settings(request)
            cap = self.body_cap(settings)
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise ProblemError(
                    413,
                    "request-too-large",
                    "Request too large",
                    f"the request body is {int(length):,} bytes; at most {cap:,} are accepted",
                )
            request = Request(request.scope, _capped(request.receive, cap))
            form = await read_form(request, settings.body_timeout_s)
            if not runtime.gate.try_enter():
                await form.close()
                (await get_metrics(request)).rejected.inc()
                raise ProblemError(
                    503,
                    "overloaded",
                    "Service overloaded",
                    f"{runtime.gate.limit} requests are already in progress; retry shortly",
                    headers={"Retry-After": "1"},
                )
            try:
                return await handler(request)
            finally:
                runtime.gate.leave()

        return gated


router = APIRouter(
    route_class=PredictRoute,
    dependencies=[Depends(refuse_unknown_query)],
    responses=PREDICT_ERRORS,
)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The file's bytes, refusing one over max_upload_bytes without reading it."""
    limit = settings.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise ProblemError(
            413,
            "file-too-large",
            "File too large",
            f"{upload.filename or 'the file'} is {upload.size:,} bytes; the limit is {limit:,}",
        )
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(
            413,
            "file-too-large",
            "File too large",
            f"{upload.filename or 'the file'} is over the {limit:,}-byte limit",
        )
    return data


def face_outputs(image: PreparedImage, probs: np.ndarray) -> list[FaceOut]:
    """One entry per face; `probs` rows are already calibrated and sum to 1 (`OnnxModel`).

    Probabilities and scores are rounded to `DECIMALS`: more digits are noise to a reader and
    bytes on the wire.
    """
    out = []
    for face, p in zip(image.faces, probs, strict=True):
        b = face.box
        out.append(
            FaceOut(
                box=BoxOut(x=b.x, y=b.y, width=b.width, height=b.height),
                score=None if face.score is None else round(face.score, DECIMALS),
                detected=face.detected,
                emotion=EMOTIONS[int(np.argmax(p))],
                probabilities=Probabilities(
                    **{e: round(float(v), DECIMALS) for e, v in zip(EMOTIONS, p, strict=True)}
                ),
            )
        )
    return out


def batch_image(filename: str | None, image: PreparedImage, probs: np.ndarray) -> BatchImage:
    return BatchImage(
        filename=filename,
        image=ImageSize(width=image.width, height=image.height),
        faces=face_outputs(image, probs),
    )


def batch_error(filename: str | None, error: ProblemError) -> BatchError:
    return BatchError(filename=filename, error=ItemProblem(**error.body()))


def _inference_failed(error: Exception) -> ProblemError:
    """The runtime's message goes to the log (`log_cause`), not to the caller."""
    problem = ProblemError(
        500,
        "inference-failed",
        "Inference failed",
        "the model could not classify this image's faces; see the service log",
    )
    problem.__cause__ = error
    return problem


def log_item_failure(request: Request, upload: UploadFile) -> None:
    """Log the exception being handled for one file of a batch; the others carry on."""
    log.exception(
        "processing %s failed (request %s)",
        escape(upload.filename),
        request_id_of(request),
    )


def _timed_classify(
    model: OnnxModel, images: list[PreparedImage], observe: Callable[[float], None]
) -> tuple[list[np.ndarray | Exception], float]:
    """`classify` plus its wall time in milliseconds (the response's inference stage)."""
    t0 = time.perf_counter()
    results = classify(model, images, observe)
    return results, (time.perf_counter() - t0) * 1000.0


async def predict_one(
    file: UploadFile,
    query: PredictQuery,
    picture: PictureFormat | None,
    runtime: Runtime,
    settings: Settings,
    metrics: Metrics,
) -> tuple[OnnxModel, PreparedImage, np.ndarray, dict[str, float], bytes | None]:
    """One image through the pipeline in one trip to the worker pool; with `picture`, the
    annotated photo is drawn and encoded there too."""
    t0 = time.perf_counter()
    model = runtime.model(query.model)
    options = query.options(runtime)
    data = await read_upload(file, settings)
    observe = metrics.inference.labels(model.entry.name).observe

    def work() -> tuple[PreparedImage, np.ndarray | Exception, float, bytes | None]:
        image = prepare_image(data, model.spec, options, keep_rgb=picture is not None)
        results, ms = _timed_classify(model, [image], observe)
        drawn = None
        if picture is not None and image.rgb is not None and isinstance(results[0], np.ndarray):
            drawn = encode(
                annotate(image.rgb, image.faces, results[0], settings.max_annotated_side), picture
            )
            image.rgb = None
        return image, results[0], ms, drawn

    try:
        image, probs, inference_ms, drawn = await runtime.run(work)
        if isinstance(probs, Exception):
            raise _inference_failed(probs)
    except ProblemError as e:
        metrics.image_errors.labels(e.slug).inc()
        raise
    metrics.faces.observe(len(image.faces))
    timing = {
        **image.timing,
        "inference": inference_ms,
        "total": (time.perf_counter() - t0) * 1000.0,
    }
    return model, image, probs, timing, drawn


# The one image of /predict and /predict/annotated.
ImageUpload = Annotated[
    UploadFile, File(description="JPEG, PNG, WebP, BMP, TIFF or GIF (first frame)")
]


@router.post(
    "/predict", response_model=PredictResponse, summary="Emotions of every face in one image"
)
async def predict(
    file: ImageUpload,
    query: PredictQueryDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> PredictResponse:
    model, image, probs, timing, _ = await predict_one(
        file, query, None, runtime, settings, metrics
    )
    return PredictResponse(
        model=ModelRef(name=model.entry.name, version=model.entry.version),
        image=ImageSize(width=image.width, height=image.height),
        faces=face_outputs(image, probs),
        timing_ms={k: round(v, 3) for k, v in timing.items()},
    )


@router.post(
    "/predict/annotated",
    response_class=Response,
    summary="The photo with each face boxed and labelled with its top emotion",
    responses={
        200: {
            "description": "the annotated photo; X-Faces: the number of faces drawn, "
            "X-Model: the model's name and version",
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "headers": {
                "X-Faces": {"schema": {"type": "integer"}},
                "X-Model": {"schema": {"type": "string"}},
            },
        }
    },
)
async def predict_annotated(
    file: ImageUpload,
    query: PredictQueryDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    picture: Annotated[
        PictureFormat, Query(alias="format", description="jpeg (quality 90) or png")
    ] = "jpeg",
) -> Response:
    model, image, _, _, drawn = await predict_one(file, query, picture, runtime, settings, metrics)
    assert drawn is not None  # predict_one raised otherwise
    headers = {
        "X-Faces": str(len(image.faces)),
        "X-Model": f"{model.entry.name} {model.entry.version}",
    }
    return Response(drawn, media_type=MEDIA_TYPES[picture], headers=headers)


@router.post(
    BATCH_PATH,
    response_model=BatchResponse,
    summary="Emotions of every face in several images, one model call for all of them",
)
async def predict_batch(
    request: Request,
    query: PredictQueryDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    # Documented only: no file is a 422 (missing field), too many a 413 below. The bound is
    # a setting, documented here with its default; `document_batch_limit` puts the app's own.
    files: Annotated[
        list[UploadFile],
        File(
            description=_batch_files_description(DEFAULT_MAX_BATCH_FILES),
            json_schema_extra={"maxItems": DEFAULT_MAX_BATCH_FILES, "minItems": 1},
        ),
    ],
) -> BatchResponse:
    t0 = time.perf_counter()
    if len(files) > settings.max_batch_files:
        raise ProblemError(
            413,
            "too-many-files",
            "Too many files",
            f"{len(files)} files sent; at most {settings.max_batch_files} per request",
        )
    model = runtime.model(query.model)
    options = query.options(runtime)

    async def prepare(upload: UploadFile) -> PreparedImage | ProblemError:
        try:
            data = await read_upload(upload, settings)
            return await runtime.run(prepare_image, data, model.spec, options)
        except ProblemError as e:
            return e
        except Exception:
            log_item_failure(request, upload)
            return ProblemError(
                500,
                "processing-failed",
                "Processing failed",
                "this image could not be processed; see the service log",
            )

    prepared = await asyncio.gather(*(prepare(f) for f in files))
    images = [p for p in prepared if isinstance(p, PreparedImage)]
    observe = metrics.inference.labels(model.entry.name).observe
    results, inference_ms = await runtime.run(_timed_classify, model, images, observe)
    by_image = dict(zip(map(id, images), results, strict=True))

    out: list[BatchImage | BatchError] = []
    timing = dict.fromkeys(STAGES, 0.0)
    for upload, item in zip(files, prepared, strict=True):
        if isinstance(item, PreparedImage):
            result = by_image[id(item)]
            if not isinstance(result, Exception):
                timing = {k: v + item.timing[k] for k, v in timing.items()}
                metrics.faces.observe(len(item.faces))
                out.append(batch_image(upload.filename, item, result))
                continue
            item = _inference_failed(result)
            log_cause(item, request_id_of(request))
        metrics.image_errors.labels(item.slug).inc()
        out.append(batch_error(upload.filename, item))
    timing |= {"inference": inference_ms, "total": (time.perf_counter() - t0) * 1000.0}
    return BatchResponse(
        model=ModelRef(name=model.entry.name, version=model.entry.version),
        results=out,
        timing_ms={k: round(v, 3) for k, v in timing.items()},
    )


def document_batch_limit(openapi: dict[str, Any], settings: Settings) -> None:
    """Write max_batch_files into the batch route's `files` schema (in place).

    The router is built once at import, without settings, so its `File(...)` can document
    only the default; `create_app` calls this on each app's generated schema.
    """
    body = openapi["paths"][BATCH_PATH]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = body["schema"]["$ref"].rsplit("/", 1)[-1]
    files = openapi["components"]["schemas"][name]["properties"]["files"]
    files["description"] = _batch_files_description(settings.max_batch_files)
    files["maxItems"] = settings.max_batch_files
    document_max_faces(openapi, settings)


def document_max_faces(openapi: dict[str, Any], settings: Settings) -> None:
    """Write max_faces_limit as the `maximum` of every ?max_faces= (in place): the bound is
    a setting, so `Query(le=...)` at import time could only state the default."""
    for methods in openapi["paths"].values():
        for operation in methods.values():
            for param in operation.get("parameters", []):
                if param.get("name") == "max_faces" and param.get("in") == "query":
                    schema = param["schema"]
                    for option in schema.get("anyOf", [schema]):
                        if option.get("type") == "integer":
                            option["maximum"] = settings.max_faces_limit

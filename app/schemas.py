"""Response bodies, declared as models so /docs shows exactly what each route returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Emotion = Literal["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error (`application/problem+json`)."""

    type: str = Field(examples=["urn:emotion:problem:unsupported-format"])
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="request path")
    request_id: str | None = Field(None, description="same as the X-Request-ID header")


class ModelRef(BaseModel):
    name: str
    version: str


class ImageSize(BaseModel):
    """Size of the image as the user sees it (after EXIF orientation)."""

    width: int
    height: int


class BoxOut(BaseModel):
    """Integer pixels in the oriented image, clipped to it."""

    x: int
    y: int
    width: int
    height: int


class Probabilities(BaseModel):
    """Calibrated class probabilities, rounded to 4 decimals; they sum to 1 within 0.00035."""

    angry: float
    disgust: float
    fear: float
    happy: float
    neutral: float
    sad: float
    surprise: float


class FaceOut(BaseModel):
    box: BoxOut
    score: float | None = Field(
        description="detector confidence, rounded to 4 decimals; null when not detected"
    )
    detected: bool = Field(
        description="false for the whole-image face of detector=none or fallback=whole"
    )
    emotion: Emotion = Field(description="the most probable emotion")
    probabilities: Probabilities


class PredictResponse(BaseModel):
    model: ModelRef
    image: ImageSize
    faces: list[FaceOut] = Field(description="largest first, at most max_faces")
    timing_ms: dict[str, float] = Field(
        description="milliseconds per stage: decode, detect, align, preprocess, inference, total"
    )


class ItemProblem(BaseModel):
    """Why one file of a batch could not be used (problem details without request fields)."""

    type: str
    title: str
    status: int
    detail: str


class BatchImage(BaseModel):
    """A file of the batch that was processed."""

    filename: str | None
    image: ImageSize
    faces: list[FaceOut]


class BatchError(BaseModel):
    """A file of the batch that could not be used; the other files are unaffected."""

    filename: str | None
    error: ItemProblem


class BatchResponse(BaseModel):
    model: ModelRef
    results: list[BatchImage | BatchError] = Field(
        description="one entry per file, in upload order"
    )
    timing_ms: dict[str, float] = Field(
        description="milliseconds per stage summed over the images; inference is the one "
        "batched model call; total is the whole request"
    )


class InputOut(BaseModel):
    layout: str
    height: int
    width: int
    channels: int
    color: str
    normalization: str
    source_size: int | None


class ModelInfo(BaseModel):
    name: str
    version: str
    default: bool
    description: str
    input: InputOut
    labels: list[str]
    output: str
    metrics: dict[str, Any] = Field(description="metrics recorded at export")
    loaded: bool
    ready: bool
    error: str | None = Field(description="why the model cannot serve, when it cannot")


class ModelsResponse(BaseModel):
    default: str | None
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    detectors: list[str]
    models: list[str]

"""All service configuration, read once from environment variables prefixed `EMOTION_`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_threads() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


DetectorEngine = Literal["litert", "tasks"]


class Settings(BaseSettings):
    """Every setting is an environment variable: `EMOTION_<FIELD NAME IN UPPER CASE>`."""

    model_config = SettingsConfigDict(
        env_prefix="EMOTION_", extra="ignore", protected_namespaces=()
    )

    # Models and detector assets
    models_dir: Path = Field(
        Path("models"), description="folder with registry.json and the ONNX files"
    )
    default_model: str | None = Field(
        None,
        description="registry name served when ?model= is absent; default: the registry's default entry",
    )
    assets_dir: Path = Field(
        Path(".cache/assets"), description="where the MediaPipe detector files are cached"
    )
    detector_short_path: Path | None = Field(
        None, description="face detector for detector=short; default: the cached short-range model"
    )
    detector_full_path: Path | None = Field(
        None, description="face detector for detector=full; default: the cached full-range model"
    )
    detector_min_score: float = Field(
        0.4, ge=0.0, le=1.0, description="minimum detection confidence"
    )
    detector_engine: DetectorEngine = Field(
        "litert",
        description="how the detector files run: `litert` runs the networks directly in the "
        "worker thread; `tasks` through MediaPipe's Tasks API (slower, the same faces)",
    )
    detector_threads: int = Field(
        2,
        gt=0,
        description="LiteRT threads for a detector call made while no other detection runs "
        "(engine litert); calls side by side take one thread each, as the worker threads "
        "already keep every core busy (`emotion batch` actors: 1 unless set)",
    )

    # Request limits
    max_upload_bytes: int = Field(
        10_000_000, gt=0, description="largest accepted upload per file, bytes (413 above)"
    )
    max_pixels: int = Field(
        40_000_000, gt=0, description="largest accepted image, pixels, checked before decoding"
    )
    max_jpeg_scans: int = Field(
        32,
        gt=0,
        description="most scans a progressive JPEG may hold (each is decoded over the whole "
        "image); more: 422 image-too-complex",
    )
    decode_side: int = Field(
        960,
        ge=0,
        description="a JPEG at least twice this long is decoded at 1/2, 1/4 or 1/8 size, "
        "keeping this many pixels or more on its longer side (faces too small to crop from "
        "that copy come from a full decode); 0: always decode in full",
    )
    max_annotated_side: int = Field(
        2048,
        gt=0,
        description="longest side, pixels, of the picture /predict/annotated returns; larger "
        "photos are scaled down before drawing",
    )
    max_batch_files: int = Field(32, gt=0, description="most files in one /predict/batch request")
    max_faces: int = Field(20, gt=0, description="default for ?max_faces=")
    max_faces_limit: int = Field(100, gt=0, description="largest value ?max_faces= accepts")

    # Execution
    inference_threads: int = Field(
        1,
        gt=0,
        description="onnxruntime intra-op threads per model call; the worker threads already "
        "keep every core busy",
    )
    worker_threads: int = Field(
        default_factory=_default_threads,
        gt=0,
        description="threads that decode, detect and infer off the event loop",
    )
    max_in_flight: int = Field(
        64, gt=0, description="requests processed or queued at once; more get 503 + Retry-After"
    )
    max_inference_batch: int = Field(
        256,
        gt=0,
        description="most faces in one onnxruntime call; a request with more faces runs in "
        "chunks of this size",
    )

    # emotion batch (app/batch.py, on Ray)
    batch_address: str | None = Field(
        None, description="Ray cluster `emotion batch` joins (ray://head:10001); empty: a local Ray"
    )
    batch_actors: int = Field(2, gt=0, description="`emotion batch` scoring actors, one CPU each")
    batch_size: int = Field(16, gt=0, description="photos per `emotion batch` actor call")

    # HTTP
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="seconds a predict request's body may take to arrive (408 after); the "
        "in-flight slot is taken only once it is in",
    )
    root_path: str = Field(
        "", description="path prefix when mounted behind a gateway, e.g. /emotion"
    )
    api_key: SecretStr | None = Field(
        None,
        description="when set, every route except /healthz, /readyz and /metrics needs header X-API-Key",
    )
    cors_origins: str = Field(
        "",
        description="comma-separated origins (e.g. https://app.example.com) whose pages may call "
        "the API from a browser (CORS); empty: off, * allows any",
    )
    trust_forwarded_for: bool = Field(
        False,
        description="access log shows the last X-Forwarded-For address (what the nearest proxy "
        "saw) instead of the socket peer; turn on only behind a proxy that sets it (the compose "
        "file does); used for logging only, never for access decisions",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="`python -m app`: seconds a connection may take to send complete request "
        "headers; then it is closed (408 when it sent part of them)",
    )
    max_connections: int = Field(
        1000,
        gt=0,
        description="`python -m app`: open connections per process; one more is answered 503 "
        "and closed",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="`python -m app`: largest request line plus headers, bytes (431 above)",
    )
    graceful_shutdown_s: float = Field(
        10.0,
        gt=0,
        description="`python -m app`: seconds requests in flight get to finish after SIGTERM; "
        "those still running then get 503 shutting-down",
    )
    host: str = Field("0.0.0.0", description="address `python -m app` listens on")
    port: int = Field(8000, gt=0, lt=65536, description="port `python -m app` listens on")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="level of the service's own log lines"
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: object) -> object:
        """`EMOTION_API_KEY=` (set but empty, e.g. from `${KEY:-}`) means no key, not an empty key."""
        return None if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_within_limit(self) -> Settings:
        """A default ?max_faces= above its own upper bound would refuse every request."""
        if self.max_faces > self.max_faces_limit:
            raise ValueError(
                f"EMOTION_MAX_FACES ({self.max_faces}) is above "
                f"EMOTION_MAX_FACES_LIMIT ({self.max_faces_limit})"
            )
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

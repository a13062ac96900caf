"""A small synchronous client for a running service (`pip install "emotion-service[client]"`).

    from app.client import EmotionClient
    with EmotionClient("http://localhost:8000", api_key=None) as client:
        reply = client.predict("photo.jpg")                 # PredictResponse
        replies = client.predict_batch(["a.jpg", "b.jpg"])  # one result per file, in order

Replies are the service's own response models (`app.schemas`), so fields are typed and
validated. An error reply raises `ServiceError` carrying its problem details. The batch call
splits long lists into requests of at most the service's batch limit, so every file gets
exactly one result, in the order given.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from app.schemas import BatchError, BatchImage, PredictResponse, Problem

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


class ServiceError(RuntimeError):
    """The service answered with an error; `problem` is its RFC 9457 body when it sent one."""

    def __init__(self, status: int, problem: Problem | None, text: str) -> None:
        super().__init__(f"{status}: {problem.detail if problem else text[:200]}")
        self.status, self.problem = status, problem


def encode(image: ImageSource) -> tuple[str, bytes]:
    """A file name and encoded bytes for an upload: files go as they are, pictures as PNG."""
    if isinstance(image, bytes):
        return "image", image
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.name, path.read_bytes()
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "image.png", buffer.getvalue()


class EmotionClient:
    """Calls `/predict` and `/predict/batch`; query options (model, detector, ...) as keywords."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 32,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.batch_size = batch_size  # the service's EMOTION_MAX_BATCH_FILES
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def predict(self, image: ImageSource, **options: str | int | float) -> PredictResponse:
        """Every face in one image."""
        name, data = encode(image)
        reply = self._post("/predict", options, [("file", (name, data))])
        return PredictResponse.model_validate(reply)

    def predict_batch(
        self, images: Iterable[ImageSource], **options: str | int | float
    ) -> list[BatchImage | BatchError]:
        """One result per image, in order: faces, or the problem that file had."""
        results: list[BatchImage | BatchError] = []
        chunk: list[tuple[str, bytes]] = []
        for image in images:
            chunk.append(encode(image))
            if len(chunk) == self.batch_size:
                results += self._batch(chunk, options)
                chunk = []
        if chunk:
            results += self._batch(chunk, options)
        return results

    def _batch(
        self, files: Sequence[tuple[str, bytes]], options: dict
    ) -> list[BatchImage | BatchError]:
        reply = self._post("/predict/batch", options, [("files", f) for f in files])
        return [
            BatchError.model_validate(r) if "error" in r else BatchImage.model_validate(r)
            for r in reply["results"]
        ]

    def _post(self, path: str, options: dict, files: list) -> dict:
        response = self._http.post(path, params=options, files=files)
        if response.is_error:
            problem = None
            if response.headers.get("content-type", "").startswith("application/problem+json"):
                problem = Problem.model_validate(response.json())
            raise ServiceError(response.status_code, problem, response.text)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmotionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

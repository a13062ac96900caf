"""Everything the service loads once at start-up, owned by the app's lifespan.

`Runtime.start` loads both face detectors and every registered model, warming each up, so no
request ever pays for loading; whatever fails is recorded with its reason rather than
stopping the process, and /readyz reports it. The worker pool that decode, detection and
inference run on, and the in-flight gate that turns overload into an immediate 503, live
here too. The app keeps the one `Runtime` on `app.state.runtime`; there is no module state.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from app.align import align_crop
from app.assets import FETCH_COMMAND, DetectorKind, detector_model_path
from app.decode import decode_image, ensure_pillow_limit
from app.face_search import FaceSearch
from app.faces import Box, Face, FaceDetector
from app.inference import ModelCatalog, OnnxModel
from app.preprocess import prepare_batch
from app.problems import ProblemError
from app.settings import Settings

DetectorChoice = Literal["auto", "short", "full", "none"]
DETECTOR_KINDS: tuple[DetectorKind, ...] = ("short", "full")
T = TypeVar("T")

log = logging.getLogger("emotion.runtime")

NOT_LOADED = "not loaded; see the service log"
"""What callers see of a load failure: paths and library messages stay in the log."""


class Gate:
    """Counts requests in flight; refuses entry past the limit instead of queueing forever.

    Only touched from the event loop, so a plain counter is race-free.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


def _load_detector(kind: DetectorKind, settings: Settings) -> FaceDetector:
    path = detector_model_path(kind, settings)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `{FETCH_COMMAND}` to fetch it")
    detector = FaceDetector.for_kind(kind, settings, settings.worker_threads)
    for _ in range(detector.instances):  # calls take the free instances in turn: warm each
        detector.detect(np.full((256, 256, 3), 127, dtype=np.uint8))
    return detector


class Runtime:
    """Loaded detectors and models, the worker pool and the in-flight gate."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.detectors: dict[DetectorKind, FaceDetector] = {}
        self.detector_errors: dict[DetectorKind, str] = {}
        self.catalog: ModelCatalog | None = None
        self.pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="emotion-worker")
        self.gate = Gate(settings.max_in_flight)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """Load and warm up everything; failures are kept as reasons, never raised."""
        runtime = cls(settings)
        ensure_pillow_limit(settings.max_pixels)
        for kind in DETECTOR_KINDS:
            try:
                runtime.detectors[kind] = _load_detector(kind, settings)
                log.info("%s-range face detector loaded and warmed up", kind)
            except Exception as e:
                runtime.detector_errors[kind] = str(e)
                log.error("%s-range face detector unavailable: %s", kind, e)
        runtime.catalog = ModelCatalog(settings)
        runtime._warm_up_pipeline()
        problems = runtime.problems()
        if problems:
            log.warning("starting NOT ready: %s", "; ".join(problems))
        else:
            log.info(
                "ready: detectors %s, models %s",
                list(runtime.detectors),
                list(runtime.catalog.states),
            )
        return runtime

    def _warm_up_pipeline(self) -> None:
        """Push one synthetic photo through every stage so lazy set-up (the JPEG decoder,
        OpenCV's warp and resize kernels) happens now rather than in the first request."""
        rgb = np.full((96, 96, 3), 127, dtype=np.uint8)
        jpeg = io.BytesIO()
        Image.fromarray(rgb).save(jpeg, "JPEG")
        decoded = decode_image(jpeg.getvalue(), self.settings.max_pixels)
        eyes = {"right_eye": (36.0, 40.0), "left_eye": (60.0, 40.0)}
        face = Face(Box(24, 24, 48, 48), 1.0, eyes, (24.0, 24.0, 48.0, 48.0))
        crop = align_crop(decoded, face)
        for state in self.catalog.states.values() if self.catalog else []:
            if state.model is not None:
                prepare_batch([crop], state.model.spec)

    def problems(self) -> list[str]:
        """Why the service is not ready, in full (for the log); empty when everything loaded."""
        reasons = [f"detector {k}: {e}" for k, e in self.detector_errors.items()]
        reasons += self.catalog.problems() if self.catalog else ["models not loaded"]
        return reasons

    def public_problems(self) -> list[str]:
        """`problems` without file paths or library messages: what a caller may see."""
        reasons = [
            f"detector {k}: {NOT_LOADED}"
            + (f" (fetch: {FETCH_COMMAND})" if FETCH_COMMAND in e else "")
            for k, e in self.detector_errors.items()
        ]
        catalog = self.catalog
        if catalog is None:
            return [*reasons, "models not loaded"]
        if catalog.registry_error:
            reasons.append(f"model registry: {NOT_LOADED}")
        reasons += [f"model {name}: {NOT_LOADED}" for name, s in catalog.states.items() if s.error]
        return reasons

    def detector(self, choice: DetectorChoice) -> FaceDetector | FaceSearch | None:
        """The detector for ?detector=, None for "none"; 503 when it failed to load.

        "auto" searches with whichever of the two detectors loaded.
        """
        if choice == "none":
            return None
        if choice == "auto" and self.detectors:
            return FaceSearch(self.detectors.get("full"), self.detectors.get("short"))
        detector = self.detectors.get(choice) if choice != "auto" else None
        if detector is None:
            raise ProblemError(
                503,
                "detector-unavailable",
                "Face detector unavailable",
                f"no face detector for detector={choice} is loaded; see the service log",
            )
        return detector

    def model(self, name: str | None) -> OnnxModel:
        """The model for ?model= (default when None): 404 if unknown, 503 if unusable."""
        catalog = self.catalog
        name = name or (catalog.default_name if catalog else None)
        if catalog is None or name is None:
            reason = "the model registry could not be read" if catalog else "no model is loaded"
            raise ProblemError(
                503, "model-unavailable", "Model unavailable", f"{reason}; see the service log"
            )
        state = catalog.states.get(name)
        if state is None:
            known = ", ".join(sorted(catalog.states)) or "none"
            raise ProblemError(
                404,
                "unknown-model",
                "Unknown model",
                f"no model named {name!r} is registered; known: {known}",
            )
        if state.model is None:
            raise ProblemError(
                503,
                "model-unavailable",
                "Model unavailable",
                f"model {name!r} could not be loaded; see the service log",
            )
        return state.model

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking work on the bounded worker pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for detector in self.detectors.values():
            detector.close()
        self.detectors.clear()

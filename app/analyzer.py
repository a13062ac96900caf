"""The Python API: the service's pipeline in-process, without HTTP.

    from app.analyzer import Analyzer
    with Analyzer() as analyzer:                 # the default model and face search
        for face in analyzer.predict("photo.jpg").faces:
            print(face.box, face.emotion, face.probabilities["happy"])

`predict` takes a path, encoded bytes, a PIL image or an RGB (or gray) uint8 array, and
runs the same decode, detect, align, preprocess and ONNX steps as `/predict`
(`app.pipeline`), so its answers are the service's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.annotate import annotate
from app.face_search import FaceSearch
from app.faces import Box, FaceDetector
from app.inference import OnnxModel
from app.labels import EMOTIONS
from app.pipeline import Options, PreparedImage, classify, prepare_image, prepare_rgb
from app.registry import load_registry
from app.runtime import DetectorChoice
from app.settings import Settings

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class FaceResult:
    """One face: its box in the image's pixels, the detector's score, and the emotions."""

    box: Box
    score: float | None
    detected: bool
    emotion: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class ImageResult:
    width: int
    height: int
    faces: list[FaceResult]
    model: str
    version: str


class Analyzer:
    """Loads one registered model and the face detectors once; `predict` is thread-safe.

    A detector runs one image at a time, so each is loaded `threads` times (default: the
    service's `worker_threads`): that many threads calling `predict` detect side by side.
    """

    def __init__(
        self,
        model: str | None = None,
        detector: DetectorChoice = "auto",
        max_faces: int | None = None,
        settings: Settings | None = None,
        threads: int | None = None,
    ) -> None:
        settings = settings or Settings()
        self.threads = threads or settings.worker_threads
        registry = load_registry(Path(settings.models_dir))
        name = model or settings.default_model or (registry.default and registry.default.name)
        entry = registry.get(name) if name else None
        if entry is None:
            known = ", ".join(m.name for m in registry.models)
            raise KeyError(f"no model {name!r} in {settings.models_dir} (registered: {known})")
        self.model = OnnxModel(entry, Path(settings.models_dir), settings.inference_threads)
        kinds = {"auto": ("full", "short"), "none": ()}.get(detector, (detector,))
        self._detectors = {
            kind: FaceDetector.for_kind(kind, settings, self.threads) for kind in kinds
        }
        finder = (
            FaceSearch(self._detectors["full"], self._detectors["short"])
            if detector == "auto"
            else self._detectors.get(detector)
        )
        self.options = Options.from_settings(
            finder, "none", max_faces or settings.max_faces, settings
        )

    def prepare(self, image: ImageInput, keep_rgb: bool = False) -> PreparedImage:
        """Everything before the model (raises `app.decode.ImageError` on a bad image)."""
        spec = self.model.spec
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if isinstance(image, np.ndarray):
            rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
            if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
                raise ValueError(
                    f"expected an HxWx3 or HxW uint8 array, got {image.shape} {image.dtype}"
                )
            return prepare_rgb(np.ascontiguousarray(rgb), spec, self.options, keep_rgb)
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        return prepare_image(data, spec, self.options, keep_rgb)

    def result(self, prepared: PreparedImage, probs: np.ndarray) -> ImageResult:
        faces = [
            FaceResult(
                face.box,
                face.score,
                face.detected,
                EMOTIONS[int(np.argmax(p))],
                {e: float(v) for e, v in zip(EMOTIONS, p, strict=True)},
            )
            for face, p in zip(prepared.faces, probs, strict=True)
        ]
        entry = self.model.entry
        return ImageResult(prepared.width, prepared.height, faces, entry.name, entry.version)

    def predict(self, image: ImageInput) -> ImageResult:
        """The faces of one image and their emotions, as `/predict` answers."""
        prepared = self.prepare(image)
        (probs,) = classify(self.model, [prepared])
        if isinstance(probs, Exception):
            raise probs
        return self.result(prepared, probs)

    def annotated(self, image: ImageInput) -> tuple[ImageResult, Image.Image]:
        """`predict`, plus the photo with each face boxed and labelled (as /predict/annotated)."""
        prepared = self.prepare(image, keep_rgb=True)
        (probs,) = classify(self.model, [prepared])
        if isinstance(probs, Exception):
            raise probs
        assert prepared.rgb is not None
        return self.result(prepared, probs), annotate(prepared.rgb, prepared.faces, probs)

    def close(self) -> None:
        for detector in self._detectors.values():
            detector.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The per-request work, top to bottom: decode, detect, align, preprocess, classify.

`prepare_image` takes one upload as far as a model-ready tensor of its faces; it is blocking
and runs on the worker pool, one call per image. `classify` then sends the faces of every
image of the request through the model together, because one onnxruntime call on a batch
costs far less than one per face. If that shared call fails, each image is retried alone so a
single poisoned image costs only its own result.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from app.align import FRAME_SIDE_PER_BOX, align_crop
from app.decode import DEFAULT_MAX_JPEG_SCANS, decode_reduced
from app.face_search import FaceSearch
from app.faces import Face, FaceDetector, scaled, whole_image_face
from app.inference import OnnxModel
from app.labels import EMOTIONS
from app.preprocess import InputSpec, prepare_batch
from app.settings import Settings

Fallback = Literal["none", "whole"]
STAGES = ("decode", "detect", "align", "preprocess")
"""The stages `prepare_image` times, in order: the keys of `PreparedImage.timing`."""

log = logging.getLogger("emotion.pipeline")


@dataclass(frozen=True)
class Options:
    """How to find faces: the detector (None: the whole image is the face) and the limits."""

    detector: FaceDetector | FaceSearch | None
    fallback: Fallback
    max_faces: int
    max_pixels: int
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    decode_side: int = 0
    """Longer side that a large JPEG may be decoded down to (0: always in full)."""

    @classmethod
    def from_settings(
        cls,
        detector: FaceDetector | FaceSearch | None,
        fallback: Fallback,
        max_faces: int,
        settings: Settings,
    ) -> Options:
        """The query's choices with the limits every entry point takes from the settings."""
        return cls(
            detector,
            fallback,
            max_faces,
            settings.max_pixels,
            settings.max_jpeg_scans,
            settings.decode_side,
        )


@dataclass
class PreparedImage:
    """One image after everything but the model: its size, faces, their input tensor, and
    the milliseconds each of `STAGES` took."""

    width: int
    height: int
    faces: list[Face]
    batch: np.ndarray
    timing: dict[str, float] = field(default_factory=dict)
    rgb: np.ndarray | None = None  # the decoded photo, kept only to draw on it


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000.0


def find_faces(rgb: np.ndarray, options: Options) -> list[Face]:
    """Detected faces, largest first, cut at max_faces; the whole image when asked to."""
    if options.detector is None:
        return [whole_image_face(rgb)]
    faces = options.detector.detect(rgb)
    if not faces and options.fallback == "whole":
        return [whole_image_face(rgb)]
    faces.sort(key=lambda f: f.box.area, reverse=True)
    return faces[: options.max_faces]


def prepare_image(
    data: bytes, spec: InputSpec, options: Options, keep_rgb: bool = False
) -> PreparedImage:
    """Bytes to a model-ready batch of this image's faces (raises `ImageError` on bad input).

    A large JPEG is decoded at reduced size (`Options.decode_side`), which is all detection
    needs; its faces are cropped from that copy unless an aligned crop would have to be
    enlarged to the face size the model reads, then from a full decode. Boxes are in the
    photo's own pixels either way. `keep_rgb` keeps the whole photo, for
    `/predict/annotated` to draw on.
    """
    decode = functools.partial(decode_reduced, data, options.max_pixels, options.max_jpeg_scans)
    t0 = time.perf_counter()
    rgb, (width, height) = decode(0 if keep_rgb else options.decode_side)
    t1 = time.perf_counter()
    faces = find_faces(rgb, options)
    t2 = time.perf_counter()
    source, source_faces = rgb, faces
    if rgb.shape[:2] != (height, width):
        fx, fy = width / rgb.shape[1], height / rgb.shape[0]
        faces = [scaled(f, fx, fy, width, height) for f in source_faces]
        if any(f.box.width * FRAME_SIDE_PER_BOX < spec.face_side for f in source_faces):
            source, source_faces = decode(0)[0], faces
    t3 = time.perf_counter()
    timing = {"decode": _ms(t0, t1) + _ms(t2, t3), "detect": _ms(t1, t2)}
    batch = _face_batch(source, source_faces, spec, timing)
    return PreparedImage(width, height, faces, batch, timing, rgb if keep_rgb else None)


def prepare_rgb(
    rgb: np.ndarray, spec: InputSpec, options: Options, keep_rgb: bool = False
) -> PreparedImage:
    """An already decoded RGB uint8 photo (the Python API's arrays) from detection on."""
    t0 = time.perf_counter()
    faces = find_faces(rgb, options)
    timing = {"detect": _ms(t0, time.perf_counter())}
    batch = _face_batch(rgb, faces, spec, timing)
    height, width = rgb.shape[:2]
    return PreparedImage(width, height, faces, batch, timing, rgb if keep_rgb else None)


def _face_batch(
    rgb: np.ndarray, faces: list[Face], spec: InputSpec, timing: dict[str, float]
) -> np.ndarray:
    """The faces aligned and cropped from `rgb`, preprocessed into one batch; adds the
    milliseconds of both steps to `timing`."""
    t0 = time.perf_counter()
    crops = [align_crop(rgb, f) for f in faces]
    t1 = time.perf_counter()
    batch = prepare_batch(crops, spec)
    timing |= {"align": _ms(t0, t1), "preprocess": _ms(t1, time.perf_counter())}
    return batch


def classify(
    model: OnnxModel, images: list[PreparedImage], observe: Callable[[float], None] | None = None
) -> list[np.ndarray | Exception]:
    """Probabilities (faces, 7) per image, from one batched model call for all of them.

    An image whose faces make the model fail gets the exception in its slot instead.
    """
    counts = [len(im.batch) for im in images]
    results: list[np.ndarray | Exception] = [
        np.zeros((0, len(EMOTIONS)), dtype=np.float64) for _ in images
    ]
    todo = [i for i, n in enumerate(counts) if n]
    if not todo:
        return results
    if len(todo) == 1:  # every /predict: the image's own batch, not a copy of it
        batch = images[todo[0]].batch
    else:
        batch = np.concatenate([images[i].batch for i in todo])
    try:
        probs = model.predict(batch, observe)
    except Exception as e:
        if len(todo) == 1:
            results[todo[0]] = e
            return results
        log.warning(
            "batched inference over %d images failed (%s); retrying each alone", len(todo), e
        )
        for i in todo:
            try:
                results[i] = model.predict(images[i].batch, observe)
            except Exception as e_one:
                results[i] = e_one
        return results
    offsets = np.cumsum([0] + [counts[i] for i in todo])
    for k, i in enumerate(todo):
        results[i] = probs[offsets[k] : offsets[k + 1]]
    return results

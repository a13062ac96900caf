"""Face detection with MediaPipe's BlazeFace models.

Both files fetched by `app.assets` run: the short-range model (faces within ~2 m, 128x128
input) and the full-range *sparse* model (192x192 input, small/far faces). The engine is
`app.blazeface` (the networks in LiteRT, in the caller's thread) or, with
`engine="tasks"`, MediaPipe's Tasks API (`app.faces_tasks`); both give the same faces.

Results come back as one `Face` per detection: a pixel box clipped to the image (what the
API reports), the detector's box as MediaPipe reports it (what alignment frames from) and
the six keypoints in pixels.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from app.assets import DetectorKind, detector_model_path
from app.blazeface import BlazeFace, Detection
from app.settings import DetectorEngine, Settings

# OpenCV's remap (here and inside MediaPipe) takes 16-bit source positions, so an image with
# a side of 32767 pixels or more cannot be letterboxed (MediaPipe aborts the process). The
# detector sees at most 192x192 anyway, so longer images are shrunk to this side first;
# boxes are scaled back.
MAX_DETECTION_SIDE = 16384

# MediaPipe names its six BlazeFace keypoints in this order (the subject's right eye first,
# which appears on the image's left).
KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth",
    "right_ear",
    "left_ear",
)


@dataclass(frozen=True)
class Box:
    """An integer pixel rectangle: top-left corner and size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class Face:
    """One face: the box reported to users, and what alignment needs to frame it.

    `frame` is the detector's raw box (x, y, width, height in float pixels, possibly reaching
    outside the image); `detected` is False for a whole-image stand-in face, whose `score` is
    None and which has no keypoints.
    """

    box: Box
    score: float | None
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)
    frame: tuple[float, float, float, float] | None = None
    detected: bool = True


def whole_image_face(rgb: np.ndarray) -> Face:
    """The stand-in face for detector=none and fallback=whole: the entire image."""
    h, w = rgb.shape[:2]
    return Face(box=Box(0, 0, w, h), score=None, detected=False)


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> Box | None:
    """Round a float box to pixels and clip it to the image; None if nothing is left."""
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(x0, y0, x1 - x0, y1 - y0)


def scaled(face: Face, fx: float, fy: float, width: int, height: int) -> Face:
    """The face found in a resized copy of a photo, in the photo's own `width` x `height`
    pixels (`fx`, `fy`: photo pixels per copy pixel)."""
    b = face.box
    x, y, w, h = face.frame or (b.x, b.y, b.width, b.height)
    frame = (x * fx, y * fy, w * fx, h * fy)
    box = clip_box(*frame, width, height)
    keypoints = {k: (x * fx, y * fy) for k, (x, y) in face.keypoints.items()}
    return replace(
        face,
        box=box or b,  # never None: the face was inside the copy
        frame=frame if face.frame is not None else None,
        keypoints=keypoints,
    )


def _fit_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """The image shrunk so that neither side exceeds max_side (unchanged if it fits)."""
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


class Engine(Protocol):
    """What runs one BlazeFace file: `app.blazeface.BlazeFace` or the Tasks API's."""

    def detect(self, rgb: np.ndarray, alone: bool = False) -> list[Detection]: ...

    def close(self) -> None: ...


def open_engine(engine: DetectorEngine, model_path: Path, min_score: float, threads: int) -> Engine:
    """One engine instance; the Tasks API (and all of mediapipe) is imported only if asked for."""
    if engine == "litert":
        return BlazeFace(model_path, min_score, threads)
    if engine == "tasks":
        from app.faces_tasks import TasksBlazeFace

        return TasksBlazeFace(model_path, min_score)
    raise ValueError(f"unknown detector engine {engine!r}; expected litert or tasks")


class FaceDetector:
    """One BlazeFace model as `instances` engines, for as many calls at once.

    An engine holds one set of tensors and must not run two images at once, so one shared
    instance would make every worker wait its turn; each call here borrows a free instance
    instead (the service loads one per worker thread).
    """

    def __init__(
        self,
        model_path: Path,
        min_score: float = 0.5,
        instances: int = 1,
        engine: DetectorEngine = "litert",
        threads: int = 1,
    ) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"face detector model not found: {model_path}")
        if instances < 1:
            raise ValueError(f"a face detector needs at least one instance, got {instances}")
        self.model_path = model_path
        self.min_score = min_score
        self.engine = engine
        self.threads = threads
        self.instances = instances
        self._free: queue.SimpleQueue[Engine | None] = queue.SimpleQueue()
        for _ in range(instances):
            self._free.put(open_engine(engine, model_path, min_score, threads))
        self._closing = threading.Lock()
        self._closed = False

    @classmethod
    def for_kind(cls, kind: DetectorKind, settings: Settings, instances: int = 1) -> FaceDetector:
        """The `kind` detector as the settings configure it (file, score, engine, threads)."""
        return cls(
            detector_model_path(kind, settings),
            settings.detector_min_score,
            instances,
            settings.detector_engine,
            settings.detector_threads,
        )

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 HxWx3 image, in the detector's order."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        image = np.ascontiguousarray(_fit_side(rgb, MAX_DETECTION_SIDE))
        # Boxes and keypoints come in the pixels of what the detector saw.
        sx, sy = width / image.shape[1], height / image.shape[0]
        detector = self._free.get()
        try:
            if detector is None:
                raise RuntimeError("face detector is closed")
            # Alone when every other instance is back in the pool: no detection beside it.
            found = detector.detect(image, alone=self._free.qsize() >= self.instances - 1)
        finally:
            self._free.put(detector)
        faces: list[Face] = []
        for det in found:
            bx, by, bw, bh = det.box
            frame = (bx * sx, by * sy, bw * sx, bh * sy)
            box = clip_box(*frame, width, height)
            if box is None:
                continue
            keypoints = {
                name: (float(x) * sx, float(y) * sy)
                for name, (x, y) in zip(KEYPOINT_NAMES, det.keypoints, strict=False)
            }
            faces.append(Face(box=box, score=det.score, keypoints=keypoints, frame=frame))
        return faces

    def close(self) -> None:
        """Release the native detectors now (their own finalizer is noisy at interpreter exit).

        Waits for calls in progress to hand their instance back; later calls raise.
        """
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for _ in range(self.instances):
                detector = self._free.get()
                if detector is not None:
                    detector.close()
            for _ in range(self.instances):
                self._free.put(None)

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

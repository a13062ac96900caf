"""BlazeFace through MediaPipe's Tasks API: the reference `app.blazeface` reproduces.

The service runs the networks directly (`app.blazeface`); this engine stays for
`EMOTION_DETECTOR_ENGINE=tasks` and for the tests that check the two answer alike. A Tasks
detector sends each call through its own dispatcher thread and must not run two images at
once. The full-range *sparse* file makes LiteRT print "Sparsity tensors may not yet be fully
supported" once per tensor at load (harmless).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from app.blazeface import Detection


def _import_mediapipe_vision():
    """Import the Tasks detector without dragging in TensorFlow.

    `mediapipe.tasks.python.core.optional_dependencies` imports TensorFlow (only for a doc
    decorator) whenever it is installed, which costs seconds and hundreds of MB in a
    development environment that also holds the training extras. Registering the no-op stub
    mediapipe itself uses when TensorFlow is absent avoids that; if TensorFlow is already
    imported (training), the real module is used.
    """
    name = "mediapipe.tasks.python.core.optional_dependencies"
    if name not in sys.modules and "tensorflow" not in sys.modules:
        stub = types.ModuleType(name)
        doc_controls = types.SimpleNamespace(do_not_generate_docs=lambda fn: fn)
        stub.doc_controls = doc_controls  # type: ignore[attr-defined]
        sys.modules[name] = stub
    import mediapipe as mp
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import face_detector
    from mediapipe.tasks.python.vision.core.vision_task_running_mode import (
        VisionTaskRunningMode,
    )

    return mp, BaseOptions, face_detector, VisionTaskRunningMode


class TasksBlazeFace:
    """One BlazeFace file as one MediaPipe Tasks detector in IMAGE mode (not thread-safe)."""

    def __init__(self, model_path: Path, min_score: float) -> None:
        mp, base_options, face_detector, running_mode = _import_mediapipe_vision()
        self._mp = mp
        options = face_detector.FaceDetectorOptions(
            base_options=base_options(model_asset_path=str(model_path)),
            min_detection_confidence=min_score,
            running_mode=running_mode.IMAGE,
        )
        self._detector = face_detector.FaceDetector.create_from_options(options)

    def detect(self, rgb: np.ndarray, alone: bool = False) -> list[Detection]:
        """Faces in an RGB uint8 photo, in its pixels, as the Tasks API reports them
        (`alone` changes nothing: the Tasks graph has its own threads)."""
        height, width = rgb.shape[:2]
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        found = []
        for det in self._detector.detect(image).detections:
            bb = det.bounding_box
            keypoints = np.array([(kp.x * width, kp.y * height) for kp in det.keypoints or []])
            score = float(det.categories[0].score) if det.categories else 0.0
            box = (float(bb.origin_x), float(bb.origin_y), float(bb.width), float(bb.height))
            found.append(Detection(score, box, keypoints.reshape(-1, 2)))
        return found

    def close(self) -> None:
        """Stop the Tasks graph now (its own finalizer is noisy at interpreter exit)."""
        self._detector.close()

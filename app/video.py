"""Emotions through a video: sampled frames, faces followed across frames, a summary per person.

Frames are read with the installed OpenCV (its bundled FFmpeg), sampled at `fps`, and sent
through `Analyzer` (the service's pipeline). A face continues a person's track when its box
overlaps that person's last box enough (IoU, best pairs first) and the person was seen
within the last `max_gap` sampled frames; otherwise it starts a new person. That is enough
for people who do not swap places between two samples, which sampling at a few frames per
second of ordinary footage gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.analyzer import Analyzer, FaceResult
from app.face_search import iou
from app.faces import Box
from app.labels import EMOTIONS

SAME_PERSON_IOU = 0.3
MAX_GAP = 3


@dataclass
class Person:
    id: int
    box: Box
    last_seen: int
    frames: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(EMOTIONS), int))
    probability_sum: np.ndarray = field(default_factory=lambda: np.zeros(len(EMOTIONS)))

    def add(self, face: FaceResult, sample: int) -> None:
        self.box, self.last_seen, self.frames = face.box, sample, self.frames + 1
        self.counts[EMOTIONS.index(face.emotion)] += 1
        self.probability_sum += [face.probabilities[e] for e in EMOTIONS]

    def summary(self, fps: float) -> dict:
        return {
            "person": self.id,
            "frames": self.frames,
            "seconds": round(self.frames / fps, 3),
            "share_of_time": {
                e: round(float(c) / self.frames, 4)
                for e, c in zip(EMOTIONS, self.counts, strict=True)
            },
            "mean_probabilities": {
                e: round(float(p) / self.frames, 4)
                for e, p in zip(EMOTIONS, self.probability_sum, strict=True)
            },
        }


class Tracker:
    """Gives each face of a sampled frame a person id, stable while the person stays in view."""

    def __init__(self, max_gap: int = MAX_GAP) -> None:
        self.people: list[Person] = []
        self.max_gap = max_gap

    def assign(self, faces: list[FaceResult], sample: int) -> list[int]:
        live = [p for p in self.people if sample - p.last_seen <= self.max_gap]
        pairs = sorted(
            ((iou(f.box, p.box), i, p) for i, f in enumerate(faces) for p in live),
            key=lambda t: -t[0],
        )
        ids: list[int | None] = [None] * len(faces)
        taken: set[int] = set()
        for overlap, i, person in pairs:
            if overlap < SAME_PERSON_IOU:
                break
            if ids[i] is None and person.id not in taken:
                ids[i] = person.id
                taken.add(person.id)
                person.add(faces[i], sample)
        for i, face in enumerate(faces):
            if ids[i] is None:
                person = Person(len(self.people), face.box, sample)
                person.add(face, sample)
                self.people.append(person)
                ids[i] = person.id
        return [i for i in ids if i is not None]


def sampled_frames(path: Path, fps: float) -> Iterator[tuple[int, float, np.ndarray, int, float]]:
    """(frame index, time in s, RGB frame, total frames, sampling rate) for every sampled frame."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path} is not a video OpenCV can read")
    try:
        source_fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(1, round(source_fps / fps))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                yield (
                    index,
                    index / source_fps,
                    cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                    total,
                    source_fps / step,
                )
            index += 1
    finally:
        capture.release()


def analyze_video(
    path: str | Path,
    analyzer: Analyzer,
    fps: float,
    on_row: Callable[[dict], None],
    annotate_to: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Call `on_row` for every face of every sampled frame; return the per-person summary.

    With `annotate_to`, the sampled frames are also written there as an MP4 video with each
    face boxed and labelled, at the sampling rate.
    """
    tracker, writer, rate = Tracker(), None, fps
    try:
        frames = sampled_frames(Path(path), fps)
        for sample, (index, seconds, rgb, total, rate) in enumerate(frames):
            if annotate_to is None:
                result = analyzer.predict(rgb)
            else:
                result, picture = analyzer.annotated(rgb)
                drawn = cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2BGR)
                if writer is None:
                    size = (drawn.shape[1], drawn.shape[0])
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(str(annotate_to), fourcc, rate, size)
                writer.write(drawn)
            ids = tracker.assign(result.faces, sample)
            for person, face in zip(ids, result.faces, strict=True):
                on_row(
                    {
                        "frame": index,
                        "time_s": round(seconds, 3),
                        "person": person,
                        "x": face.box.x,
                        "y": face.box.y,
                        "width": face.box.width,
                        "height": face.box.height,
                        "emotion": face.emotion,
                        **{e: round(face.probabilities[e], 4) for e in EMOTIONS},
                    }
                )
            if progress is not None:
                progress(index + 1, total)
    finally:
        if writer is not None:
            writer.release()
    return [p.summary(rate) for p in tracker.people]

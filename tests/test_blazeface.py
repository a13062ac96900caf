"""BlazeFace run directly (`app.blazeface`) against MediaPipe's Tasks API on the same files."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from app.analyzer import Analyzer
from app.blazeface import SPECS, BlazeFace, decode, letterbox, letterbox_maps, weighted_nms
from app.faces import FaceDetector, open_engine
from app.settings import Settings
from tests import images


def _photos() -> dict[str, np.ndarray]:
    """Sizes that scale by whole and by odd factors, up and down, wide and tall, and faces
    cut by the photo's edge (whose boxes MediaPipe clamps)."""
    astronaut = images.astronaut()
    return {
        "astronaut": astronaut,
        "640x480": images.astronaut_640x480(),
        "group": images.group(),
        "1080p": images.group_1080p(),
        "rotated": images.rotated(astronaut, 25),
        "no face": images.no_face(),
        "500x333": cv2.resize(astronaut, (500, 333), interpolation=cv2.INTER_AREA),
        "333x611": cv2.resize(astronaut, (333, 611), interpolation=cv2.INTER_AREA),
        "97x61": cv2.resize(astronaut, (97, 61), interpolation=cv2.INTER_AREA),
        "cut at the top left": np.ascontiguousarray(astronaut[115:, 210:]),
        "cut at the bottom": np.ascontiguousarray(astronaut[:150, 60:460]),
        "3 px high": np.ascontiguousarray(astronaut[200:203]),
        "1 px wide": np.ascontiguousarray(astronaut[:, 300:301]),
    }


@pytest.fixture(scope="module", params=["short", "full"])
def engines(request, assets_dir) -> Iterator[tuple[FaceDetector, FaceDetector]]:
    settings = Settings(assets_dir=assets_dir)
    tasks = settings.model_copy(update={"detector_engine": "tasks"})
    pair = (
        FaceDetector.for_kind(request.param, settings),
        FaceDetector.for_kind(request.param, tasks),
    )
    yield pair
    for detector in pair:
        detector.close()


@pytest.mark.parametrize("name", list(_photos()))
def test_the_same_faces_as_the_tasks_api(engines, name):
    direct, tasks = engines
    assert (direct.engine, tasks.engine) == ("litert", "tasks")
    photo = _photos()[name]
    expected, found = tasks.detect(photo), direct.detect(photo)
    assert len(found) == len(expected)
    # no face, too thin for one, and a cut face the full-range model misses
    assert found or name in ("no face", "3 px high", "1 px wide", "cut at the top left")
    for ours, theirs in zip(found, expected, strict=True):
        assert ours.box == theirs.box and ours.frame == theirs.frame
        assert ours.score == pytest.approx(theirs.score, abs=1e-5)
        assert list(ours.keypoints) == list(theirs.keypoints)
        for key, point in theirs.keypoints.items():
            assert ours.keypoints[key] == pytest.approx(point, abs=1e-3)


def test_the_service_answers_alike_with_either_engine(assets_dir):
    """The same faces and emotions through the whole pipeline (default model, auto search)."""
    settings = Settings(assets_dir=assets_dir)
    photo = images.group_1080p()
    results = []
    for engine in ("litert", "tasks"):
        with Analyzer(settings=settings.model_copy(update={"detector_engine": engine})) as a:
            results.append(a.predict(photo))
    direct, tasks = results
    assert len(direct.faces) == len(tasks.faces) >= 4
    for ours, theirs in zip(direct.faces, tasks.faces, strict=True):
        assert ours.box == theirs.box and ours.emotion == theirs.emotion
        for emotion, p in theirs.probabilities.items():
            assert ours.probabilities[emotion] == pytest.approx(p, abs=1e-4)


def test_anchor_layouts_match_the_networks_outputs():
    short, full = SPECS[128].anchors(), SPECS[192].anchors()
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # short range: 16x16 cells of 2 anchors, then 8x8 cells of 6, row by row
    assert short[0] == pytest.approx([0.5 / 16, 0.5 / 16])
    assert short[2] == pytest.approx([1.5 / 16, 0.5 / 16])
    assert short[512] == pytest.approx([0.5 / 8, 0.5 / 8])
    assert short[518] == pytest.approx([1.5 / 8, 0.5 / 8])
    assert full[48] == pytest.approx([0.5 / 48, 1.5 / 48])


def test_overlapping_detections_merge_by_score():
    probs = np.array([0.6, 0.9, 0.5])
    boxes = np.array([[0.12, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]])
    keypoints = np.stack([np.full((6, 2), v) for v in (0.3, 0.2, 0.7)])
    best, other = weighted_nms(probs, boxes, keypoints)
    assert best.score == pytest.approx(0.9) and other.score == pytest.approx(0.5)
    assert best.box[0] == pytest.approx((0.1 * 0.9 + 0.12 * 0.6) / 1.5)
    assert best.box[2] == pytest.approx(0.2)
    assert best.keypoints == pytest.approx(np.full((6, 2), (0.2 * 0.9 + 0.3 * 0.6) / 1.5))
    assert other.box == pytest.approx((0.6, 0.6, 0.2, 0.2))


def test_degenerate_boxes_neither_hang_nor_survive_decoding():
    """A box of no area is its own group (else suppression would never remove it), and the
    decoder drops boxes of negative size or with NaNs, as MediaPipe does."""
    boxes = np.array([[0.1, 0.1, 0.0, 0.2], [0.5, 0.5, 0.0, 0.0]])
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(weighted_nms(np.array([0.9, 0.8]), boxes, np.zeros((2, 6, 2))))
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and len(done[0]) == 2
    anchors = SPECS[128].anchors()
    raw = np.zeros((896, 16), np.float32)
    raw[:, 2:4] = 20.0  # every box 20 px of the 128 square
    raw[0, 2] = -5.0  # negative width
    raw[1, 3] = np.nan
    scores = np.full(896, -10.0, np.float32)
    scores[[0, 1, 500]] = 5.0
    [kept] = decode(raw, scores, anchors, 128, 0.5)
    assert kept.box[2] == pytest.approx(20 / 128) and np.isfinite(kept.keypoints).all()


def test_letterbox_centres_the_photo_with_a_zero_border():
    photo = np.full((100, 200, 3), 255, np.uint8)
    maps = letterbox_maps(200, 100, 128)
    tensor = letterbox(photo, maps)
    assert tensor.shape == (1, 128, 128, 3) and tensor.dtype == np.float32 and maps[2] == 200
    column = tensor[0, :, 64, 0]
    assert column[0] == -1.0 and column[-1] == -1.0  # zero pixels, as [-1, 1]
    assert (column[40:88] == 1.0).all()  # the photo, 64 rows high, in the middle
    with pytest.raises(ValueError, match="too large"):
        letterbox_maps(40000, 10, 128)


def test_an_unknown_engine_is_refused(assets_dir):
    path = assets_dir / "face_detection_short_range.tflite"
    with pytest.raises(ValueError, match="engine"):
        open_engine("onnx", path, 0.5, 1)  # type: ignore[arg-type]


def test_a_call_alone_may_use_every_thread(assets_dir, monkeypatch):
    """With EMOTION_DETECTOR_THREADS=2 a call uses the two-thread interpreter only while no
    other call is detecting, and both interpreters give the same faces."""
    settings = Settings(assets_dir=assets_dir, detector_threads=2)
    seen: list[bool] = []
    detect = BlazeFace.detect

    def spy(self, rgb, alone=False):
        seen.append(alone)
        return detect(self, rgb, alone)

    monkeypatch.setattr(BlazeFace, "detect", spy)
    photo = images.group()
    with FaceDetector.for_kind("full", settings, instances=2) as detector:
        alone = detector.detect(photo)
        other = detector._free.get()  # another call in progress
        beside = detector.detect(photo)
        detector._free.put(other)
    assert seen == [True, False]
    assert len(alone) == len(beside) == 3
    for a, b in zip(alone, beside, strict=True):
        assert a.box == b.box and a.score == pytest.approx(b.score, abs=1e-6)

"""The default face search (detector=auto) with the real MediaPipe detectors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.assets import detector_model_path
from app.face_search import FaceSearch, tiles
from app.faces import FaceDetector
from app.settings import Settings
from tests import images

FACE = images.astronaut()[20:260, 110:350]  # the face fills about 40% of this square


def row_of_faces(width: int, height: int, side: int, count: int) -> tuple[np.ndarray, list]:
    """`count` copies of the face in a row on a grey canvas, and where each copy went."""
    canvas = np.full((height, width, 3), 200, np.uint8)
    placed = []
    for i in range(count):
        x, y = 10 + i * (side + 20), (height - side) // 2
        canvas[y : y + side, x : x + side] = cv2.resize(
            FACE, (side, side), interpolation=cv2.INTER_AREA
        )
        placed.append((x, y, side))
    return canvas, placed


class Counting:
    """A detector that counts its passes."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector, self.passes = detector, 0

    def detect(self, rgb):
        self.passes += 1
        return self.detector.detect(rgb)


@pytest.fixture(scope="module")
def detectors(assets_dir):
    settings = Settings(assets_dir=assets_dir)
    found = {
        kind: FaceDetector(detector_model_path(kind, settings), settings.detector_min_score)
        for kind in ("full", "short")
    }
    yield found
    for d in found.values():
        d.close()


def test_tiles_cover_the_photo_and_overlap():
    boxes = tiles(480, 640)
    assert len(boxes) == 4
    covered = np.zeros((480, 640), bool)
    for x, y, w, h in boxes:
        covered[y : y + h, x : x + w] = True
        assert w < 640 and h < 480
    assert covered.all()
    assert boxes[0][2] > 320 and boxes[0][3] > 240  # neighbours share a strip


def test_a_group_photo_of_small_faces_is_found_whole(detectors):
    photo, placed = row_of_faces(1280, 720, 100, 5)  # faces about 42 px wide, 3% of the photo
    assert detectors["short"].detect(photo) == []  # what the old default returned
    faces = FaceSearch(detectors["full"], detectors["short"]).detect(photo)
    assert len(faces) == 5
    for x, y, side in placed:  # each copy found once, inside its own square
        inside = [
            f
            for f in faces
            if x <= f.box.x + f.box.width / 2 <= x + side
            and y <= f.box.y + f.box.height / 2 <= y + side
        ]
        assert len(inside) == 1, (x, [f.box for f in faces])
        (face,) = inside
        rx, ry = face.keypoints["right_eye"]  # keypoints moved with the tile's offset
        assert x <= rx <= x + side and y <= ry <= y + side


def test_a_face_25_px_wide_in_a_640x480_photo_is_found(detectors):
    photo, _ = row_of_faces(640, 480, 55, 1)
    assert detectors["full"].detect(photo) == []
    (face,) = FaceSearch(detectors["full"], detectors["short"]).detect(photo)
    assert 18 <= face.box.width <= 32


def test_a_portrait_costs_one_pass_and_a_photo_without_faces_is_empty(detectors):
    full, short = Counting(detectors["full"]), Counting(detectors["short"])
    search = FaceSearch(full, short)  # type: ignore[arg-type]
    assert len(search.detect(images.astronaut_640x480())) == 1
    assert (full.passes, short.passes) == (1, 0)
    assert search.detect(images.no_face()) == []
    assert full.passes == 1 + 1 + 4 and short.passes == 1  # whole photo, then its four tiles


def test_either_detector_alone_still_searches(detectors):
    photo, _ = row_of_faces(1280, 720, 150, 5)
    assert len(FaceSearch(detectors["full"], None).detect(photo)) == 5
    assert len(FaceSearch(None, detectors["short"]).detect(images.astronaut())) == 1
    with pytest.raises(ValueError):
        FaceSearch(None, None)

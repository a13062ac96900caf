"""Real MediaPipe detection on real photos, and FER-style alignment of what it finds."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from app.align import FRAME_DX_PER_BOX, FRAME_DY_PER_BOX, FRAME_SIDE_PER_BOX, align_crop, face_frame
from app.assets import detector_model_path
from app.faces import KEYPOINT_NAMES, Box, Face, FaceDetector, clip_box, whole_image_face
from app.settings import Settings
from tests import images
from training.tools.framing import measure

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detectors(assets_dir) -> Iterator[dict[str, FaceDetector]]:
    settings = Settings(assets_dir=assets_dir)
    found = {k: FaceDetector(detector_model_path(k, settings)) for k in ("short", "full")}
    yield found
    for d in found.values():
        d.close()


@pytest.mark.parametrize("kind", ["short", "full"])
def test_one_face_in_the_astronaut_photo(detectors, kind):
    faces = detectors[kind].detect(images.astronaut())
    assert len(faces) == 1
    face = faces[0]
    x, y, w, h = images.ASTRONAUT_FACE
    assert abs(face.box.x - x) < 12 and abs(face.box.y - y) < 20
    assert 0.8 < face.box.width / w < 1.25
    assert face.score is not None and face.score > 0.8 and face.detected
    assert list(face.keypoints) == list(KEYPOINT_NAMES)
    (rx, ry), (lx, ly) = face.keypoints["right_eye"], face.keypoints["left_eye"]
    assert rx < lx  # the subject's right eye is on the image's left
    assert face.keypoints["mouth"][1] > max(ry, ly)
    for px, py in face.keypoints.values():  # pixels, not normalized
        assert x - w / 2 < px < x + 1.5 * w and y - h / 2 < py < y + 1.5 * h


def test_several_faces(detectors):
    full = detectors["full"].detect(images.group())
    assert len(full) == 3
    short = detectors["short"].detect(images.group())
    assert len(short) >= 2


@pytest.mark.parametrize("kind", ["short", "full"])
def test_no_face_in_a_cup_of_coffee(detectors, kind):
    assert detectors[kind].detect(images.no_face()) == []


@pytest.mark.parametrize("kind", ["short", "full"])
def test_a_shrunk_image_gives_boxes_in_the_original_pixels(detectors, kind, monkeypatch):
    """Images longer than MAX_DETECTION_SIDE are detected at that side, reported at theirs."""
    photo = images.astronaut()
    [plain] = detectors[kind].detect(photo)
    monkeypatch.setattr("app.faces.MAX_DETECTION_SIDE", 256)
    [shrunk] = detectors[kind].detect(photo)
    assert np.allclose(shrunk.frame, plain.frame, atol=8)
    for name, (x, y) in plain.keypoints.items():
        assert np.allclose(shrunk.keypoints[name], (x, y), atol=8)


@pytest.mark.parametrize("kind", ["short", "full"])
@pytest.mark.parametrize("shape", [(1, 32767), (32768, 2)])
def test_a_side_of_32767_pixels_does_not_abort_the_process(assets_dir, kind, shape):
    """MediaPipe's own OpenCV aborts the process (no exception) on such sides: run it apart."""
    code = (
        "import numpy as np\n"
        "from app.assets import detector_model_path\n"
        "from app.faces import FaceDetector\n"
        "from app.settings import Settings\n"
        f"path = detector_model_path({kind!r}, Settings(assets_dir={str(assets_dir)!r}))\n"
        "with FaceDetector(path) as detector:\n"
        f"    print('faces', detector.detect(np.zeros({shape + (3,)}, np.uint8)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faces []" in done.stdout


def test_detector_rejects_non_rgb_input(detectors):
    with pytest.raises(ValueError):
        detectors["short"].detect(np.zeros((10, 10), np.uint8))


def test_closed_detector_refuses_work(assets_dir):
    detector = FaceDetector(detector_model_path("short", Settings(assets_dir=assets_dir)))
    detector.close()
    detector.close()  # idempotent
    with pytest.raises(RuntimeError):
        detector.detect(images.astronaut())


def test_instances_detect_side_by_side_with_the_same_answers(assets_dir, detectors):
    """Worker threads each borrow an instance, so detection is no longer one call at a time,
    and every instance answers as the single shared detector did."""
    path = detector_model_path("full", Settings(assets_dir=assets_dir))
    photos = [images.astronaut(), images.group(), images.no_face()] * 4
    expected = [detectors["full"].detect(p) for p in photos]
    with FaceDetector(path, instances=3) as pooled, ThreadPoolExecutor(3) as pool:
        assert list(pool.map(pooled.detect, photos)) == expected
        assert pooled._free.qsize() == 3  # every instance handed back
    with pytest.raises(RuntimeError, match="closed"):
        pooled.detect(images.astronaut())
    with pytest.raises(ValueError, match="instance"):
        FaceDetector(path, instances=0)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        FaceDetector(tmp_path / "nope.tflite")


def test_boxes_are_clipped_to_the_image():
    assert clip_box(-5.4, 10, 20, 20, 100, 100) == Box(0, 10, 15, 20)
    assert clip_box(90, 90, 20, 20, 100, 100) == Box(90, 90, 10, 10)
    assert clip_box(120, 10, 5, 5, 100, 100) is None


def test_aligned_crop_is_a_square_framed_like_fer(detectors):
    face = detectors["short"].detect(images.astronaut())[0]
    crop = align_crop(images.astronaut(), face)
    side = round(FRAME_SIDE_PER_BOX * face.frame[2])
    assert crop.shape == (side, side, 3) and crop.dtype == np.uint8
    assert align_crop(images.astronaut(), face, 48).shape == (48, 48, 3)


def _gray(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).mean(axis=-1)


def test_alignment_levels_a_tilted_face(detectors):
    upright = images.astronaut()
    tilted = images.rotated(upright, 25)
    face = detectors["short"].detect(tilted)[0]
    straight = detectors["short"].detect(upright)[0]
    # BlazeFace's eye keypoints under-read a strong roll (about -19 of -25 degrees here),
    # but the turn is clearly seen and mostly undone.
    turn = math.degrees(face_frame(face)[3] - face_frame(straight)[3])
    assert -35 < turn < -12
    reference = _gray(align_crop(upright, straight, 48))
    levelled = _gray(align_crop(tilted, face, 48))
    b = face.box  # the same box without the rotation, for comparison
    unlevelled = _gray(align_crop(tilted, Face(b, face.score), 48))
    assert np.abs(levelled - reference).mean() < 0.5 * np.abs(unlevelled - reference).mean()


def test_crops_reaching_outside_the_image_are_padded():
    rgb = np.zeros((60, 60, 3), np.uint8)
    rgb[:, :10] = 200
    face = Face(
        Box(0, 0, 30, 30),
        0.9,
        {"right_eye": (3.0, 5.0), "left_eye": (17.0, 5.0)},
        frame=(-8.0, -10.0, 30.0, 30.0),
    )
    crop = align_crop(rgb, face)
    assert crop.shape == (36, 36, 3)
    assert crop[0, 0, 0] == 200  # replicated border, not black


def test_a_face_without_keypoints_is_cut_along_its_box():
    rgb = images.astronaut()
    assert np.array_equal(align_crop(rgb, whole_image_face(rgb)), rgb)
    crop = align_crop(rgb, Face(Box(10, 20, 30, 40), None, detected=False))
    assert crop.shape == (40, 30, 3)


def test_framing_measurement_inverts_the_alignment_constants():
    """`training.tools.framing` measures a frame in the same terms `app.align` builds it from."""
    eyes = {"right_eye": (40.0, 50.0), "left_eye": (80.0, 58.0)}
    face = Face(Box(20, 20, 100, 100), 0.9, eyes, frame=(20.0, 20.0, 100.0, 100.0))
    cx, cy, side, _ = face_frame(face)
    sample = measure(face, cx - side / 2, cy - side / 2, side)
    assert sample.side_per_box == pytest.approx(FRAME_SIDE_PER_BOX)
    assert sample.dx_per_box == pytest.approx(FRAME_DX_PER_BOX, abs=1e-9)
    assert sample.dy_per_box == pytest.approx(FRAME_DY_PER_BOX)

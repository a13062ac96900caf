"""Large JPEGs decoded at reduced size: the same faces, in the photo's own pixels, for less."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app import pipeline
from app.analyzer import Analyzer
from app.decode import decode_image, decode_reduced, draft_scale
from app.face_search import iou
from app.settings import Settings
from tests import images

LIMIT = 40_000_000


def test_draft_scale_keeps_the_longer_side_at_least_min_side() -> None:
    assert draft_scale(1920, 1080, 960) == 2
    assert draft_scale(4000, 3000, 960) == 4
    assert draft_scale(1080, 1920, 960) == 2
    assert draft_scale(1919, 1080, 960) == 1
    assert draft_scale(8000, 6000, 960) == 8
    assert draft_scale(4000, 3000, 0) == 1  # off


def test_a_large_jpeg_decodes_smaller_and_reports_its_full_size() -> None:
    jpeg = images.encode(cv2.resize(images.astronaut(), (2048, 1536)), "JPEG", quality=90)
    rgb, size = decode_reduced(jpeg, LIMIT, min_side=960)
    assert rgb.shape == (768, 1024, 3) and size == (2048, 1536)
    full = decode_image(jpeg, LIMIT)
    assert full.shape == (1536, 2048, 3)
    # libjpeg's scaled decode is close to an area-averaged shrink of the full decode
    shrunk = cv2.resize(full, (1024, 768), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - rgb).mean() < 3


def test_exif_orientation_turns_the_reported_size_too() -> None:
    upright = cv2.resize(images.astronaut(), (1536, 2048))  # portrait, 1536 wide
    rgb, size = decode_reduced(images.exif_rotated_jpeg(upright), LIMIT, min_side=960)
    assert size == (1536, 2048) and rgb.shape == (1024, 768, 3)


def test_other_formats_and_small_jpegs_decode_in_full() -> None:
    big = cv2.resize(images.astronaut(), (2048, 2048))
    rgb, size = decode_reduced(images.encode(big, "PNG"), LIMIT, min_side=960)
    assert rgb.shape == (2048, 2048, 3) and size == (2048, 2048)
    small = images.encode(images.astronaut_640x480(), "JPEG")
    assert decode_reduced(small, LIMIT, min_side=960)[0].shape == (480, 640, 3)


@pytest.fixture
def analyzers(tiny_models_dir: Path, assets_dir: Path):
    """The same model and detector decoding large JPEGs reduced (default) and in full."""
    made = [
        Analyzer(settings=Settings(models_dir=tiny_models_dir, assets_dir=assets_dir, **extra))
        for extra in ({}, {"decode_side": 0})
    ]
    yield made
    for analyzer in made:
        analyzer.close()


def test_faces_of_a_large_photo_match_a_full_decode(analyzers) -> None:
    reduced, full = analyzers
    jpeg = images.encode(cv2.resize(images.group(), (2560, 1440)), "JPEG", quality=90)
    a, b = reduced.predict(jpeg), full.predict(jpeg)
    assert (a.width, a.height) == (b.width, b.height) == (2560, 1440)
    assert len(a.faces) == len(b.faces) == 3
    for face in b.faces:
        twin = max(a.faces, key=lambda f: iou(f.box, face.box))
        assert iou(twin.box, face.box) > 0.9  # the same face, boxes in the photo's pixels
        assert twin.emotion == face.emotion
        gap = max(abs(twin.probabilities[k] - p) for k, p in face.probabilities.items())
        assert gap < 0.02


def test_small_faces_are_cropped_from_a_full_decode(analyzers, monkeypatch) -> None:
    """A face too small in the reduced copy sends the crop to a second, full decode."""
    calls: list[int] = []
    real = pipeline.decode_reduced

    def counting(data, max_pixels, max_jpeg_scans, min_side=0):
        calls.append(min_side)
        return real(data, max_pixels, max_jpeg_scans, min_side)

    monkeypatch.setattr(pipeline, "decode_reduced", counting)
    reduced = analyzers[0]
    large_faces = images.encode(cv2.resize(images.astronaut(), (2048, 2048)), "JPEG")
    assert len(reduced.predict(large_faces).faces) == 1 and calls == [960]
    calls.clear()
    canvas = np.full((2160, 3840, 3), 200, np.uint8)
    canvas[1000:1360, 1700:2060] = cv2.resize(images.astronaut()[20:260, 110:350], (360, 360))
    (face,) = reduced.predict(images.encode(canvas, "JPEG")).faces
    assert calls == [960, 0]  # 1/4 scale leaves its box too narrow for the model's crop
    assert 1700 < face.box.x < 2060 and face.box.width > 100  # in the photo's pixels
    calls.clear()
    reduced.annotated(large_faces)  # a picture to draw on: the whole photo, decoded once
    assert calls == [0]

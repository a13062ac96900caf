"""JPEG pixels decoded by OpenCV: the pixels Pillow gives, at every scale and orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from app import decode
from app.decode import decode_reduced, draft_scale
from tests import images

LIMIT = 40_000_000


def pillow_pixels(data: bytes, min_side: int = 0) -> np.ndarray:
    """What the service decoded before OpenCV took the JPEGs: Pillow alone."""
    with Image.open(io.BytesIO(data)) as im:
        scale = draft_scale(*im.size, min_side)
        if scale > 1:
            im.draft(im.mode, (im.width // scale, im.height // scale))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return np.asarray(im.convert("RGB"))


def with_orientation(rgb: np.ndarray, value: int, **options) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return images.encode(rgb, "JPEG", exif=exif.tobytes(), **options)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return images.group_1080p()


@pytest.mark.parametrize("min_side", [0, 960, 480, 200])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_and_scale_gives_pillows_pixels(photo, orientation, min_side):
    data = with_orientation(photo, orientation, quality=85)
    rgb, size = decode_reduced(data, LIMIT, min_side=min_side)
    expected = pillow_pixels(data, min_side)
    assert rgb.flags.c_contiguous and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected)
    assert size == ((1080, 1920) if orientation in (5, 6, 7, 8) else (1920, 1080))


@pytest.mark.parametrize(
    "options",
    [{"progressive": True}, {"subsampling": 0}, {"subsampling": 1}, {"quality": 40}],
    ids=["progressive", "4:4:4", "4:2:2", "quality-40"],
)
def test_jpeg_variants_give_pillows_pixels(photo, options):
    data = images.encode(photo, "JPEG", **options)
    np.testing.assert_array_equal(decode_reduced(data, LIMIT)[0], pillow_pixels(data))


def test_grey_jpegs_come_out_as_three_equal_channels(photo):
    data = images.encode(Image.fromarray(photo).convert("L"), "JPEG")
    rgb = decode_reduced(data, LIMIT)[0]
    np.testing.assert_array_equal(rgb, pillow_pixels(data))


def test_opencv_decodes_ordinary_jpegs_and_pillow_the_rest(photo, monkeypatch):
    calls: list[bool] = []
    real = decode._jpeg_by_opencv

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(decode, "_jpeg_by_opencv", spy)
    small = photo[:120, :160]
    decode_reduced(images.encode(small, "JPEG"), LIMIT)
    cmyk = images.encode(Image.fromarray(small).convert("CMYK"), "JPEG")
    np.testing.assert_array_equal(decode_reduced(cmyk, LIMIT)[0], pillow_pixels(cmyk))
    decode_reduced(images.encode(small, "PNG"), LIMIT)
    assert calls == [True, False, False]  # the CMYK JPEG and the PNG went to Pillow


def test_a_jpeg_opencv_refuses_gets_pillows_error(photo):
    data = images.encode(photo[:200, :300], "JPEG")[:1500]
    with pytest.raises(decode.ImageError) as info:
        decode_reduced(data, LIMIT)
    assert (info.value.status, info.value.slug) == (400, "truncated-image")

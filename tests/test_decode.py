"""Upload decoding: every accepted format and colour mode, and every way an upload can be bad."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from app.decode import (
    UNREADABLE,
    ImageError,
    decode_image,
    ensure_pillow_limit,
    wide_gray_to_uint8,
)
from app.jpeg_scans import count_scans
from tests.images import encode, exif_rotated_jpeg, many_page_tiff, many_scan_jpeg, png_header

LIMIT = 10_000_000


def gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, np.full_like(x, 90)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_supported_format_decodes_to_rgb_uint8(fmt):
    rgb = gradient()
    out = decode_image(encode(rgb, fmt), LIMIT)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous
    tolerance = 40 if fmt in ("JPEG", "WEBP", "GIF") else 0
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= tolerance


def test_gif_uses_the_first_frame():
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    out = decode_image(encode(red, "GIF", save_all=True, append_images=[blue]), LIMIT)
    assert tuple(out[8, 8]) == (255, 0, 0)


def _tiff(im: Image.Image) -> bytes:
    return encode(im, "TIFF")


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "LA", "RGBA", "I", "F"])
def test_any_mode_becomes_rgb(mode):
    im = Image.fromarray(gradient()).convert(mode)
    out = decode_image(_tiff(im), LIMIT)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8


def test_transparent_pixels_are_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 4:, 3] = 255
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), LIMIT)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 7]) == (255, 0, 0)


def test_palette_transparency_is_composited_on_white():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    im.paste(1, (4, 0, 8, 8))
    out = decode_image(encode(im, "PNG", transparency=0), LIMIT)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 7]) == (255, 0, 0)


def test_sixteen_bit_gray_is_scaled_not_clipped():
    values = np.array([[0, 257 * 64, 32768, 65535]], dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(values), "PNG"), LIMIT)
    assert out[0, :, 0].tolist() == [0, 64, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_wide_gray_scaling_rules():
    assert wide_gray_to_uint8(np.array([0, 65535], np.uint16), "I;16").tolist() == [0, 255]
    assert wide_gray_to_uint8(np.array([0, 200], np.int32), "I").tolist() == [0, 200]
    assert wide_gray_to_uint8(np.array([0, 65535], np.int32), "I").tolist() == [0, 255]
    assert wide_gray_to_uint8(np.array([-5, 5], np.int32), "I").tolist() == [0, 255]
    assert wide_gray_to_uint8(np.array([0.0, 0.5, 1.0], np.float32), "F").tolist() == [0, 128, 255]
    assert wide_gray_to_uint8(np.array([np.nan, 2.0, 200.0], np.float32), "F").tolist() == [
        0,
        2,
        200,
    ]


def test_exif_orientation_is_applied():
    upright = gradient(40, 60)
    out = decode_image(exif_rotated_jpeg(upright), LIMIT)
    assert out.shape == (40, 60, 3)
    assert np.abs(out.astype(int) - upright.astype(int)).mean() < 12


def test_broken_exif_falls_back_to_the_stored_image():
    data = encode(gradient(), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01")
    assert decode_image(data, LIMIT).shape == (40, 60, 3)


def _error(data: bytes, max_pixels: int = LIMIT) -> ImageError:
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels)
    return info.value


@pytest.mark.parametrize(
    ("data", "status", "slug"),
    [
        (b"", 400, "empty-file"),
        (b"this is not an image at all", 400, "not-an-image"),
        (encode(gradient(), "JPEG")[:300], 400, "truncated-image"),
        (encode(gradient(), "PNG")[:-40], 400, "truncated-image"),
        (encode(gradient(), "ICO"), 415, "unsupported-format"),
        (encode(gradient(), "PDF"), 400, "not-an-image"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "ico", "pdf"],
)
def test_bad_uploads_raise_typed_errors(data, status, slug):
    err = _error(data)
    assert (err.status, err.slug) == (status, slug)
    assert err.title and err.detail


def test_corrupt_pixel_data_is_a_400():
    data = bytearray(encode(gradient(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\x00" * 32  # damage the compressed stream
    err = _error(bytes(data))
    assert err.status == 400 and err.slug in ("corrupt-image", "truncated-image")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # 8000 x 8000 declared, almost no pixel data: refused from the header alone.
    err = _error(png_header(8000, 8000), max_pixels=LIMIT)
    assert (err.status, err.slug) == (413, "image-too-large")
    assert "8000x8000" in err.detail


def test_pillow_decompression_bomb_guard_is_a_413():
    # Far beyond Pillow's own guard (2 x MAX_IMAGE_PIXELS) even with a huge own limit.
    err = _error(png_header(60_000, 60_000), max_pixels=10**12)
    assert (err.status, err.slug) == (413, "image-too-large")


def test_zero_size_image_is_refused():
    with pytest.raises(ImageError) as info:
        decode_image(png_header(0, 10), LIMIT)
    assert info.value.status == 400


# --- decode budget: work per image, not only pixels ------------------------------------------


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding():
    """The scan-count CPU bomb: refused from its markers, at once, with a 422."""
    data = many_scan_jpeg(2000, side=1000)
    assert count_scans(data, 10**6) == 2000
    t0 = time.perf_counter()
    err = _error(data)
    assert time.perf_counter() - t0 < 0.5
    assert (err.status, err.slug) == (422, "image-too-complex")
    assert count_scans(data, 32) == 33  # the walk stops just past the cap


def test_ordinary_progressive_and_baseline_jpegs_pass_the_scan_budget():
    for progressive in (False, True):
        data = encode(gradient(), "JPEG", progressive=progressive)
        assert count_scans(data, 10**6) <= 10
        assert decode_image(data, LIMIT).shape == (40, 60, 3)
    assert decode_image(many_scan_jpeg(32), LIMIT, max_jpeg_scans=32).shape == (64, 64, 3)


def test_a_tiff_with_many_pages_reads_only_the_first_quickly():
    """The page-count CPU bomb: nothing counts the pages to find the first."""
    data = many_page_tiff(20_000)
    t0 = time.perf_counter()
    assert decode_image(data, LIMIT).shape == (1, 1, 3)
    assert time.perf_counter() - t0 < 1.0


def test_a_png_with_a_large_icc_profile_decodes():
    ensure_pillow_limit(LIMIT)
    profile = np.random.default_rng(0).integers(0, 256, 2 << 20, np.uint8).tobytes()
    data = encode(gradient(), "PNG", icc_profile=profile)
    assert decode_image(data, LIMIT).shape == (40, 60, 3)


def test_corrupt_image_details_name_no_library_internals():
    data = bytearray(encode(gradient(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\x00" * 32
    err = _error(bytes(data))
    assert err.detail in (
        UNREADABLE,
        "the image data ends early; the upload is incomplete or cut off",
    )
    assert "Error" not in err.detail and "PIL" not in err.detail

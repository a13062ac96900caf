"""Hostile and broken input: property tests on decoding and on the request path.

Every upload, however malformed, must end in a valid prediction or a 4xx problem+json, never
a 5xx, never a worker that hangs (each call runs under a watchdog timeout), and never a
decode that allocates for a size the header merely claims. Hypothesis runs derandomized with
modest example counts, so the file is reproducible and quick; schemathesis then checks the
service against its own OpenAPI schema.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import (
    content_type_conformance,
    missing_required_header,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from app.decode import ImageError, decode_image, ensure_pillow_limit
from app.main import create_app
from app.settings import Settings
from tests import images
from tests.conftest import ASSETS_DIR
from tests.tiny_models import tiny_registry

T = TypeVar("T")
LIMIT = 40_000_000  # the default max_pixels
PROBLEM = "application/problem+json"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_HTTP = settings(FUZZ, max_examples=30)

_watchdog = ThreadPoolExecutor(4, thread_name_prefix="fuzz-watchdog")


def within(seconds: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` on another thread and fail if it does not return in time (a hung worker)."""
    return _watchdog.submit(fn, *args, **kwargs).result(timeout=seconds)


def decode(data: bytes) -> np.ndarray | ImageError:
    """The decode result or its typed error; any other exception propagates (a bug)."""
    ensure_pillow_limit(LIMIT)
    try:
        return within(20, decode_image, data, LIMIT)
    except ImageError as e:
        return e


def assert_usable_or_4xx(result: np.ndarray | ImageError) -> None:
    if isinstance(result, ImageError):
        assert 400 <= result.status < 500, (result.status, result.slug, result.detail)
        assert result.slug and result.title and result.detail
    else:
        assert result.ndim == 3 and result.shape[2] == 3 and result.dtype == np.uint8
        assert result.shape[0] * result.shape[1] <= LIMIT


# --- sample files: every format, multi-frame, 16-bit, CMYK ----------------------------------


def _samples() -> dict[str, bytes]:
    rgb = Image.fromarray(np.ascontiguousarray(images.astronaut()[::8, ::8]))  # 64x64
    frames = [rgb.rotate(90), rgb.rotate(180)]
    gray16 = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    return {
        "jpeg": images.encode(rgb, "JPEG"),
        "jpeg-progressive": images.encode(rgb, "JPEG", progressive=True),
        "png": images.encode(rgb, "PNG"),
        "webp": images.encode(rgb, "WEBP"),
        "bmp": images.encode(rgb, "BMP"),
        "tiff": images.encode(rgb, "TIFF"),
        "tiff-lzw": images.encode(rgb, "TIFF", compression="tiff_lzw"),
        "gif": images.encode(rgb, "GIF"),
        "gif-animated": images.encode(rgb, "GIF", save_all=True, append_images=frames),
        "webp-animated": images.encode(rgb, "WEBP", save_all=True, append_images=frames),
        "tiff-multipage": images.encode(rgb, "TIFF", save_all=True, append_images=frames),
        "png-animated": images.encode(rgb, "PNG", save_all=True, append_images=frames),
        "png-16bit-gray": images.encode(gray16, "PNG"),
        "tiff-16bit-gray": images.encode(gray16, "TIFF"),
        "tiff-float": images.encode(Image.fromarray(np.asarray(gray16, np.float32)), "TIFF"),
        "jpeg-cmyk": images.encode(rgb.convert("CMYK"), "JPEG"),
        "tiff-cmyk": images.encode(rgb.convert("CMYK"), "TIFF"),
        "png-rgba": images.encode(rgb.convert("RGBA"), "PNG"),
        "png-palette": images.encode(rgb.convert("P"), "PNG"),
    }


SAMPLES = _samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_decodes(name: str) -> None:
    out = decode(SAMPLES[name])
    assert isinstance(out, np.ndarray), out
    assert out.shape == (64, 64, 3)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    assert_usable_or_4xx(decode(data))


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8", b"BM",
          b"II*\x00", b"MM\x00*", b"GIF89a", b"GIF87a"]  # fmt: skip


@FUZZ
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=2048))
def test_random_bytes_behind_a_real_signature(magic: bytes, tail: bytes) -> None:
    assert_usable_or_4xx(decode(magic + tail))


@FUZZ
@given(name=st.sampled_from(sorted(SAMPLES)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_at_any_point(name: str, cut: float) -> None:
    data = SAMPLES[name]
    assert_usable_or_4xx(decode(data[: int(len(data) * cut)]))


@FUZZ
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    flips=st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
)
def test_corrupted_bytes(name: str, flips: list[tuple[float, int]]) -> None:
    data = bytearray(SAMPLES[name])
    for where, value in flips:
        # Most of the structure is in the first few hundred bytes; aim there half the time.
        span = len(data) if value % 2 else min(len(data), 512)
        data[int(where * span)] = value
    assert_usable_or_4xx(decode(bytes(data)))


# --- crafted headers: decompression bombs and zero sizes ------------------------------------


def gif_header(w: int, h: int) -> bytes:
    """Logical screen and first frame both w x h, one tiny LZW block."""
    screen = struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def tiff_header(w: int, h: int) -> bytes:
    """Little-endian 8-bit gray TIFF with one strip of one byte."""
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
            (277, 3, 1), (278, 4, h), (279, 4, 1)]  # fmt: skip
    out = b"II*\x00" + struct.pack("<I", 10) + b"\x00\x00" + struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    return out + struct.pack("<I", 0)


def webp_header(w: int, h: int) -> bytes:
    """An extended (VP8X) WebP declaring a w x h canvas, with no image data."""
    vp8x = b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossless_header(w: int, h: int) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_header(w: int, h: int) -> bytes:
    """A real 8x8 JPEG whose SOF0 marker is rewritten to declare w x h."""
    data = images.encode(Image.new("L", (8, 8)), "JPEG")
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", h, w) + data[sof + 9 :]


def bmp_header(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + info + b"\x00" * 16


BOMBS: dict[str, tuple[Callable[[int, int], bytes], int]] = {
    # format -> (header builder, largest side the header can declare)
    "png": (images.png_header, 2**31 - 1),
    "gif": (gif_header, 2**16 - 1),
    "tiff": (tiff_header, 2**32 - 1),
    "webp": (webp_header, 2**24),
    "webp-lossless": (webp_lossless_header, 2**14),
    "jpeg": (jpeg_header, 2**16 - 1),
    "bmp": (bmp_header, 2**31 - 1),
}


@pytest.mark.parametrize("fmt", sorted(BOMBS))
def test_100000_square_bombs_are_refused_from_the_header(fmt: str) -> None:
    build, biggest = BOMBS[fmt]
    side = min(100_000, biggest)
    data = build(side, side)
    assert len(data) < 1000
    out = decode(data)
    assert isinstance(out, ImageError) and (out.status, out.slug) == (413, "image-too-large")
    assert f"{LIMIT:,}" in out.detail


@FUZZ
@given(fmt=st.sampled_from(sorted(BOMBS)), data=st.data())
def test_any_declared_size_over_the_limit_is_refused(fmt: str, data: st.DataObject) -> None:
    build, biggest = BOMBS[fmt]
    w = data.draw(st.integers(LIMIT // biggest + 1, biggest), label="width")
    h = data.draw(st.integers(LIMIT // w + 1, biggest), label="height")
    out = decode(build(w, h))
    assert isinstance(out, ImageError), f"{fmt} {w}x{h} was decoded"
    assert out.status in (400, 413), (out.status, out.detail)


# WebP stores each side minus one: it cannot declare a zero side.
@pytest.mark.parametrize("fmt", sorted(f for f in BOMBS if not f.startswith("webp")))
@pytest.mark.parametrize(("w", "h"), [(0, 0), (0, 64), (64, 0)])
def test_zero_sized_images_are_400(fmt: str, w: int, h: int) -> None:
    build, _ = BOMBS[fmt]
    out = decode(build(w, h))
    assert isinstance(out, ImageError) and out.status == 400, out


# --- EXIF orientation, valid and not ----------------------------------------------------------


def exif_orientation(kind: int, payload: bytes, count: int = 1) -> bytes:
    """An EXIF block whose Orientation tag has any TIFF type, count and raw value."""
    entry = struct.pack(">HHI", 0x0112, kind, count)
    if len(payload) <= 4:
        entry, tail = entry + payload.ljust(4, b"\x00"), b""
    else:  # the value lives after the IFD
        entry, tail = entry + struct.pack(">I", 8 + 2 + 12 + 4), payload
    ifd = struct.pack(">H", 1) + entry + b"\x00\x00\x00\x00"
    return b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + ifd + tail


def jpeg_with_exif(exif: bytes) -> bytes:
    im = Image.fromarray(np.ascontiguousarray(images.astronaut()[:48:2, :64:2]))  # 32x24
    return images.encode(im, "JPEG", exif=exif)


ODD_ORIENTATIONS = {
    "short-0": (3, struct.pack(">H", 0)),
    "short-9": (3, struct.pack(">H", 9)),
    "short-255": (3, struct.pack(">H", 255)),
    "short-65535": (3, struct.pack(">H", 65535)),
    "long-2^31-1": (4, struct.pack(">I", 2**31 - 1)),
    "sshort-minus-1": (8, struct.pack(">h", -1)),
    "sshort-minus-32768": (8, struct.pack(">h", -32768)),
    "slong-minus-6": (9, struct.pack(">i", -6)),
    "ascii-6": (2, b"6\x00"),
    "ascii-garbage": (2, b"garbage\x00"),
    "rational-3/2": (5, struct.pack(">II", 3, 2)),
    "undefined-6": (7, b"\x06"),
    "unknown-type-99": (99, struct.pack(">H", 6)),
}


@pytest.mark.parametrize("name", sorted(ODD_ORIENTATIONS))
def test_odd_exif_orientation_values_leave_the_image_as_stored(name: str) -> None:
    out = decode(jpeg_with_exif(exif_orientation(*ODD_ORIENTATIONS[name])))
    assert isinstance(out, np.ndarray), out
    assert out.shape == (24, 32, 3)


@pytest.mark.parametrize(
    ("kind", "payload", "count"),
    [(3, struct.pack(">HH", 6, 6), 2), (3, b"\x00\x06", 2**31), (3, b"", 0), (4, b"", 2**20)],
    ids=["two-values", "count-2^31", "count-0", "offset-past-the-end"],
)
def test_malformed_exif_orientation_entries(kind: int, payload: bytes, count: int) -> None:
    assert_usable_or_4xx(decode(jpeg_with_exif(exif_orientation(kind, payload, count))))


@FUZZ
@given(value=st.integers(-(2**31), 2**32 - 1))
def test_any_exif_orientation_integer(value: int) -> None:
    exif = exif_orientation(4, struct.pack(">I", value) if value >= 0 else struct.pack(">i", value))
    if value < 0:
        exif = exif_orientation(9, struct.pack(">i", value))
    out = decode(jpeg_with_exif(exif))
    assert isinstance(out, np.ndarray), out
    assert out.shape == ((32, 24, 3) if value in (5, 6, 7, 8) else (24, 32, 3))


@FUZZ
@given(exif=st.binary(max_size=200))
def test_random_exif_blocks(exif: bytes) -> None:
    assert_usable_or_4xx(decode(jpeg_with_exif(b"Exif\x00\x00" + exif)))


# --- the request path ---------------------------------------------------------------------


def post(client: TestClient, *args: Any, **kwargs: Any) -> Any:
    return within(30, client.post, *args, **kwargs)


def assert_answer(r: Any) -> None:
    """A prediction or a 4xx problem; never a 5xx."""
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert 400 <= r.status_code < 500
        assert r.headers["content-type"] == PROBLEM, r.headers
        body = r.json()
        assert body["status"] == r.status_code and body["detail"]
        assert body["request_id"] == r.headers["x-request-id"]


def assert_batch(r: Any, n: int) -> None:
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == n
    for item in results:
        if "error" in item:
            assert 400 <= item["error"]["status"] < 500, item
        else:
            assert item["image"]["width"] > 0 and isinstance(item["faces"], list)


CONTENT_TYPES = ["image/jpeg", "image/png", "text/plain", "application/x-evil", "", "image/gif",
                 "multipart/form-data", "application/octet-stream; charset=utf-8"]  # fmt: skip
FILE_NAMES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=40
)
# Names that come back unchanged: httpx percent-encodes control characters and quotes, and a
# part with an empty file name is a plain form field, not a file (see the test below).
PLAIN_FILE_NAMES = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\'),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def http(client: TestClient) -> TestClient:
    """The shared test app; after the module its workers and in-flight gate must be idle."""
    yield client
    runtime = client.app.state.runtime
    assert runtime.gate.active == 0
    assert runtime.pool.submit(lambda: "alive").result(timeout=10) == "alive"
    r = client.post("/predict", files={"file": ("a.png", SAMPLES["png"])}, params=SMALL_FACES)
    assert r.status_code == 200


SMALL_FACES = {"detector": "none"}  # 64x64 samples are too small for the detector


@FUZZ_HTTP
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda n, c: SAMPLES[n][: int(len(SAMPLES[n]) * c)],
            st.sampled_from(sorted(SAMPLES)),
            st.floats(0, 1),
        ),  # fmt: skip
    ),
    filename=FILE_NAMES,
    content_type=st.sampled_from(CONTENT_TYPES),
    detector=st.sampled_from(["short", "full", "none"]),
)
def test_predict_with_any_upload(
    http: TestClient, data: bytes, filename: str, content_type: str, detector: str
) -> None:
    r = post(
        http,
        "/predict",
        files={"file": (filename, data, content_type)},
        params={"detector": detector},
    )
    assert_answer(r)


@pytest.mark.parametrize("name", ["photo.png", "photo.gif", "photo.exe", "photo", "../x.tiff"])
@pytest.mark.parametrize("content_type", ["image/png", "text/html", "application/pdf"])
def test_extension_and_content_type_are_ignored(http: TestClient, name: str, content_type: str):
    """The format is sniffed from the bytes: a JPEG called anything is still a JPEG."""
    r = post(http, "/predict", files={"file": (name, SAMPLES["jpeg"], content_type)})
    assert r.status_code == 200, r.text


@FUZZ_HTTP
@given(
    picks=st.lists(
        st.tuples(st.sampled_from(sorted(SAMPLES)), st.floats(0.0, 1.0), PLAIN_FILE_NAMES),
        min_size=1,
        max_size=6,
    )
)
def test_batch_of_broken_files_keeps_one_result_per_file(
    http: TestClient, picks: list[tuple[str, float, str]]
) -> None:
    files = []
    for name, keep, filename in picks:
        data = SAMPLES[name] if keep > 0.5 else SAMPLES[name][: int(len(SAMPLES[name]) * keep)]
        files.append(("files", (filename, data, "application/octet-stream")))
    r = post(http, "/predict/batch", files=files, params=SMALL_FACES)
    assert_batch(r, len(files))
    assert [x["filename"] for x in r.json()["results"]] == [f for _, _, f in picks]


def test_a_part_without_a_filename_is_a_422_but_an_empty_filename_is_a_file(
    http: TestClient,
) -> None:
    """A part with no filename parameter is a form field, not a file (httpx omits an empty
    name), so the batch is refused whole; filename="" is a file like any other."""
    files = [("files", ("", SAMPLES["jpeg"], "image/jpeg"))] * 2
    r = post(http, "/predict/batch", files=files)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert "files.0" in r.json()["detail"]
    body, headers = multipart([part(b"files", SAMPLES["jpeg"], name) for name in (b"a.jpg", b"")])
    r = http.post("/predict/batch", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert [x["filename"] for x in r.json()["results"]] == ["a.jpg", ""]


def multipart(parts: list[bytes], boundary: str = "fuzzb0undary") -> tuple[bytes, dict]:
    body = b"".join(f"--{boundary}\r\n".encode() + p for p in parts)
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def part(name: bytes, data: bytes, filename: bytes | None = b"a.jpg") -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return disposition + b"\r\n\r\n" + data + b"\r\n"


@FUZZ_HTTP
@given(
    names=st.lists(
        st.binary(max_size=30) | st.sampled_from([b"file", b"files"]), min_size=1, max_size=40
    ),
    with_filename=st.booleans(),
    path=st.sampled_from(["/predict", "/predict/batch"]),
)
def test_multipart_with_odd_field_names_and_many_parts(
    http: TestClient, names: list[bytes], with_filename: bool, path: str
) -> None:
    filename = b"a.jpg" if with_filename else None
    body, headers = multipart([part(n, SAMPLES["jpeg"], filename) for n in names])
    r = post(http, path, content=body, headers=headers, params=SMALL_FACES)
    assert_answer(r)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (multipart([part(b"f%d" % i, b"x", None) for i in range(1500)])[0], None),  # fields
        (multipart([part(b"file", b"x") for _ in range(1500)])[0], None),  # files
        (b"\x00\xff" * 500, None),
        (multipart([part(b"file", SAMPLES["jpeg"])])[0], "multipart/form-data"),  # no boundary
        (multipart([part(b"file", SAMPLES["jpeg"])])[0], "multipart/form-data; boundary=zz"),
        (b"--fuzzb0undary\r\n" + part(b"file", SAMPLES["jpeg"]), None),  # never closed
        (
            multipart(
                [
                    b'Content-Disposition: form-data; name="file"; filename="'
                    + b"a" * 200_000
                    + b'"\r\n\r\n'
                    + SAMPLES["jpeg"]
                    + b"\r\n"
                ]
            )[0],
            None,
        ),  # fmt: skip
        (multipart([b"X-A: b\r\n" * 5000 + part(b"file", SAMPLES["jpeg"])])[0], None),
        (multipart([b"Content-Type: image/jpeg\r\n\r\n" + SAMPLES["jpeg"] + b"\r\n"])[0], None),
        (SAMPLES["jpeg"], "image/jpeg"),
        (b"file=abc", "application/x-www-form-urlencoded"),
    ],
    ids=[
        "1500-fields",
        "1500-files",
        "garbage",
        "no-boundary",
        "wrong-boundary",
        "unclosed",
        "200k-filename",
        "5000-headers",
        "no-disposition",
        "raw-jpeg",
        "urlencoded",
    ],  # fmt: skip
)
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_malformed_multipart_bodies_are_4xx(
    http: TestClient, body: bytes, content_type: str | None, path: str
) -> None:
    headers = {"content-type": content_type or "multipart/form-data; boundary=fuzzb0undary"}
    r = post(http, path, content=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == PROBLEM


# --- schemathesis: the service against its own OpenAPI schema -------------------------------

_models = Path(tempfile.mkdtemp(prefix="emotion-schemathesis-"))
tiny_registry(_models)
# A separate app: schemathesis runs its lifespan itself (on first use, until exit).
SCHEMA_APP = create_app(
    Settings(models_dir=_models, assets_dir=ASSETS_DIR, worker_threads=2, inference_threads=1)
)
schema = schemathesis.openapi.from_dict(SCHEMA_APP.openapi())
schema.app = SCHEMA_APP  # what `from_asgi` sets: requests go to the app in-process


@schema.parametrize()
@settings(FUZZ, max_examples=50)
def test_the_service_honours_its_openapi_schema(case: schemathesis.Case, assets_dir: Path):
    """Positive and negative examples of every operation: no 5xx, documented statuses,
    content types, headers and bodies. (Schema-valid uploads that are not images are
    rightly refused with 400, so schemathesis' positive-data-acceptance check does not
    apply; too many batch files are a 413, outside its negative-data list.)"""
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            missing_required_header,
            unsupported_method,
        ]
    )

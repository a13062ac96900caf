"""Back-pressure and bounded memory: probes stay responsive, overload is an immediate 503.

The heavy work is made slow on purpose (a detector or model that sleeps) so the tests are
deterministic on a busy machine; `tests/benchmarks/load_test.py` measures the real thing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.decode import CHUNK_PIXELS, on_white, wide_gray_to_uint8
from app.main import create_app
from app.settings import Settings
from tests import images
from tests.asgi import photo_files, runtime, serving, slowed

PHOTO = images.encode(images.astronaut()[::4, ::4], "JPEG")  # 128x128, decodes in ~1 ms


async def predict(http: httpx.AsyncClient, **params: str) -> httpx.Response:
    return await http.post("/predict", files=photo_files(PHOTO), params=params)


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_probes_answer_while_every_worker_is_busy(
    make_settings: Callable[..., Settings], tiny_models_dir: Path
) -> None:
    """Decode/detect/infer run on the worker pool, so the event loop stays free."""
    app = create_app(make_settings(tiny_models_dir, worker_threads=2))

    async def scenario() -> None:
        async with serving(app) as http:
            detector = runtime(app).detectors["full"]  # the default search's first pass
            detector.detect = slowed(detector.detect, 1.0)  # type: ignore[method-assign]
            busy = [asyncio.create_task(predict(http)) for _ in range(4)]  # 2 run, 2 queue
            await asyncio.sleep(0.2)
            for path in ("/healthz", "/readyz", "/metrics", "/models"):
                t0 = time.perf_counter()
                r = await http.get(path)
                took = time.perf_counter() - t0
                assert r.status_code == 200, (path, r.text)
                assert took < 0.5, f"{path} took {took:.2f} s while predictions were busy"
            assert not any(t.done() for t in busy), "probes should not wait for predictions"
            assert "emotion_predict_in_flight 4.0" in (await http.get("/metrics")).text
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200] * 4

    run(scenario)


def test_over_max_in_flight_is_an_immediate_503_with_retry_after(
    make_settings: Callable[..., Settings], tiny_models_dir: Path
) -> None:
    app = create_app(make_settings(tiny_models_dir, max_in_flight=1))

    async def timed(coro: object) -> tuple[httpx.Response, float]:
        t0 = time.perf_counter()
        r = await coro  # type: ignore[misc]
        return r, time.perf_counter() - t0

    async def scenario() -> None:
        async with serving(app) as http:
            detector = runtime(app).detectors["full"]  # the default search's first pass
            detector.detect = slowed(detector.detect, 1.0)  # type: ignore[method-assign]
            first = asyncio.create_task(timed(predict(http)))
            await asyncio.sleep(0.2)  # the first one holds the only slot
            batch = [("files", ("a.jpg", PHOTO, "image/jpeg"))] * 2
            rejected = await asyncio.gather(
                timed(predict(http)),
                timed(predict(http, model="rgb224")),
                timed(http.post("/predict/batch", files=batch)),
            )
            for r, took in rejected:
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["type"].endswith(":overloaded")
                assert took < 0.5, f"the 503 took {took:.2f} s: it must not wait for a slot"
            ok, _ = await first
            assert ok.status_code == 200, ok.text
            assert runtime(app).gate.active == 0
            assert (await predict(http)).status_code == 200  # the slot is free again
            assert "emotion_predict_rejected_total 3.0" in (await http.get("/metrics")).text

    run(scenario)


def test_every_exit_path_gives_the_slot_back(
    make_settings: Callable[..., Settings], tiny_models_dir: Path
) -> None:
    """Errors, refusals and a caller that gives up all release their in-flight slot."""
    app = create_app(make_settings(tiny_models_dir, max_in_flight=2, max_upload_bytes=50_000))

    async def scenario() -> None:
        async with serving(app) as http:
            gate = runtime(app).gate
            assert (await http.post("/predict", files=photo_files(b"junk"))).status_code == 400
            assert (await predict(http, model="nope")).status_code == 404
            assert (await predict(http, max_faces="0")).status_code == 422
            big = photo_files(b"\xff" * 60_000)
            assert (await http.post("/predict", files=big)).status_code == 413
            assert gate.active == 0

            detector = runtime(app).detectors["full"]  # the default search's first pass
            detector.detect = slowed(detector.detect, 0.5)  # type: ignore[method-assign]
            abandoned = asyncio.create_task(predict(http))
            await asyncio.sleep(0.1)
            assert gate.active == 1
            abandoned.cancel()  # the caller disconnects mid-prediction
            with pytest.raises(asyncio.CancelledError):
                await abandoned
            assert gate.active == 0
            await asyncio.sleep(0.6)  # the orphaned worker job finishes; nothing is stuck
            assert (await predict(http)).status_code == 200

    run(scenario)


# --- memory: conversions of crafted images stay near the size of their output -------------


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("mode", ["F", "I", "I;16"])
def test_wide_gray_conversion_memory_is_bounded(mode: str) -> None:
    """The output plus a few chunk-sized temporaries (float64 copies of the whole image took
    256 MB here, 32 bytes per pixel; 1.7 GB for a 260 KB float TIFF of 40 Mpx)."""
    n = 8_000_000
    dtype = {"F": np.float32, "I": np.int32, "I;16": np.uint16}[mode]
    gray = (np.arange(n) % 70_000).astype(dtype).reshape(2000, 4000)
    peak = _peak_bytes(lambda: wide_gray_to_uint8(gray, mode))
    assert peak < n + 40 * CHUNK_PIXELS, f"{peak / 1e6:.0f} MB"


def test_alpha_compositing_memory_is_bounded() -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (2000, 4000, 4), np.uint8)
    peak = _peak_bytes(lambda: on_white(rgba))
    assert peak < 3 * 8_000_000 + 40 * CHUNK_PIXELS, f"{peak / 1e6:.0f} MB"


PEAK_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
from app.decode import decode_image
mode, fmt, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "F":
    im = Image.fromarray(np.full((side, side), 300.0, np.float32))
else:
    im = Image.new(mode, (side, side))
buf = io.BytesIO()
im.save(buf, fmt)
data = buf.getvalue()
del im, buf

def kib(key):
    line = next(x for x in open("/proc/self/status") if x.startswith(key))
    return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = kib("VmRSS")
out = decode_image(data, 100_000_000)
print((kib("VmHWM") - before) * 1024 / out.nbytes)
"""


@pytest.mark.parametrize(
    ("mode", "fmt", "most"),
    [("RGB", "JPEG", 4.0), ("L", "PNG", 3.0), ("F", "TIFF", 5.0), ("LA", "PNG", 6.5)],
)
def test_decoding_peak_memory_stays_near_the_output_size(mode: str, fmt: str, most: float):
    """Peak RSS growth of one decode, in multiples of the RGB array it returns. Before the
    fixes: 4.7x (RGB), 4.0x (L), 15x (float), 9.5x (LA); the float and LA figures made a
    2 GB replica fall over on two crafted uploads of a few hundred kB at 40 Mpx."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, mode, fmt, "3000"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    ratio = float(result.stdout.split()[-1])
    assert ratio < most, f"peak {ratio:.1f}x the output"

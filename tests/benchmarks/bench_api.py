"""Latency and throughput of the running API over real HTTP (a script, not a test).

    python tests/benchmarks/bench_api.py                      # starts uvicorn on a free port
    python tests/benchmarks/bench_api.py --url http://host:8000

It sends --requests sequential POST /predict calls with a 640x480 JPEG holding one face
(the scikit-image astronaut, cut and scaled) and reports client-side p50/p95 latency and
the server's own per-stage medians, then half as many POST /predict/annotated calls
(p50/p95 with the JPEG drawn and sent back), then --rounds POST /predict/batch calls of
--batch-files copies each and reports faces per second. Without --url it serves
--models-dir (default: models/, or tiny generated models when that has no registry.json).
Run it on an otherwise idle machine; anything else using the CPU inflates the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` importable

from tests import images  # noqa: E402
from tests.servers import running_server  # noqa: E402


def photo_640x480() -> bytes:
    return images.encode(images.astronaut_640x480(), "JPEG", quality=90)


def models_dir_for(requested: Path, tmp: Path) -> tuple[Path, str]:
    if (requested / "registry.json").exists():
        return requested, f"{requested} (registry)"
    from tests.tiny_models import tiny_registry

    tiny_registry(tmp)
    return tmp, f"tiny generated models ({requested}/registry.json is absent)"


@contextmanager
def local_server(models_dir: Path, threads: int) -> Iterator[str]:
    """uvicorn serving `models_dir` on a free loopback port; yields its URL once ready."""
    env = {"EMOTION_MODELS_DIR": str(models_dir.resolve()), "EMOTION_LOG_LEVEL": "warning"}
    if threads:
        env |= {"EMOTION_WORKER_THREADS": str(threads), "EMOTION_INFERENCE_THREADS": str(threads)}
    args = ["uvicorn", "app.main:app", "--no-access-log", "--log-level", "warning"]
    with running_server(args, env, ready_within_s=120) as (_, url):
        yield url


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_single(http: httpx.Client, photo: bytes, n: int, params: dict) -> dict:
    files = {"file": ("photo.jpg", photo, "image/jpeg")}
    for _ in range(10):  # connection set-up, caches
        http.post("/predict", files=files, params=params).raise_for_status()
    latencies, stages = [], {}
    for _ in range(n):
        t0 = time.perf_counter()
        r = http.post("/predict", files=files, params=params)
        latencies.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        body = r.json()
        assert len(body["faces"]) == 1, body
        for k, v in body["timing_ms"].items():
            stages.setdefault(k, []).append(v)
    return {
        "latencies": latencies,
        "stages": {k: statistics.median(v) for k, v in stages.items()},
        "model": body["model"],
    }


def bench_annotated(http: httpx.Client, photo: bytes, n: int, params: dict) -> list[float]:
    """Client-side latencies of /predict/annotated (JPEG back): what drawing adds."""
    files = {"file": ("photo.jpg", photo, "image/jpeg")}
    latencies = []
    for i in range(n + 10):  # the first 10 warm up
        t0 = time.perf_counter()
        r = http.post("/predict/annotated", files=files, params=params)
        if i >= 10:
            latencies.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        assert r.headers["x-faces"] == "1", r.headers
    return latencies


def bench_batch(http: httpx.Client, photo: bytes, files: int, rounds: int, params: dict) -> dict:
    parts = [("files", (f"p{i}.jpg", photo, "image/jpeg")) for i in range(files)]
    http.post("/predict/batch", files=parts, params=params).raise_for_status()
    faces, t0 = 0, time.perf_counter()
    for _ in range(rounds):
        r = http.post("/predict/batch", files=parts, params=params)
        r.raise_for_status()
        faces += sum(len(x.get("faces", [])) for x in r.json()["results"])
    seconds = time.perf_counter() - t0
    return {"faces": faces, "seconds": seconds, "per_request_ms": seconds / rounds * 1000}


def report(single: dict, annotated: list[float], batch: dict, args, target: str) -> None:
    lat = single["latencies"]
    print(f"\ntarget: {target}")
    print(
        f"model: {single['model']['name']} {single['model']['version']}; "
        f"detector: {args.detector}; cpus: {os.cpu_count()}"
    )
    print(f"\nPOST /predict, 640x480 JPEG, 1 face, {len(lat)} sequential requests")
    print(f"  {'p50':>8} {'p95':>8} {'mean':>8} {'min':>8}   (ms, client side)")
    print(
        f"  {percentile(lat, 50):8.2f} {percentile(lat, 95):8.2f} {statistics.mean(lat):8.2f} "
        f"{min(lat):8.2f}"
    )
    print(
        "  server stage medians (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in single["stages"].items())
    )
    print(f"\nPOST /predict/annotated, same photo, JPEG back, {len(annotated)} requests")
    print(f"  p50 {percentile(annotated, 50):.2f}  p95 {percentile(annotated, 95):.2f}  (ms)")
    print(f"\nPOST /predict/batch, {args.batch_files} files x {args.rounds} requests")
    print(
        f"  {batch['faces'] / batch['seconds']:8.1f} faces/s   "
        f"({batch['per_request_ms']:.1f} ms per {args.batch_files}-file request)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch-files", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--model", help="?model= (default: the service's default)")
    parser.add_argument("--detector", default="auto", choices=["auto", "short", "full", "none"])
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="worker and onnxruntime threads for the local server (default: "
        "the service's default, one per CPU)",
    )
    args = parser.parse_args(argv)
    params = {"detector": args.detector} | ({"model": args.model} if args.model else {})
    photo = photo_640x480()

    def run(url: str, target: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            single = bench_single(http, photo, args.requests, params)
            annotated = bench_annotated(http, photo, args.requests // 2, params)
            batch = bench_batch(http, photo, args.batch_files, args.rounds, params)
        report(single, annotated, batch, args, target)

    if args.url:
        run(args.url.rstrip("/"), args.url)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        models_dir, described = models_dir_for(args.models_dir, Path(tmp))
        with local_server(models_dir, args.threads) as url:
            run(url, f"local uvicorn serving {described}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The service's speed table: each figure served over HTTP beside its in-process floor.

    python tests/benchmarks/bench_speed.py              # starts `python -m app` on models/
    python tests/benchmarks/bench_speed.py --rounds 3 --requests 200 --seconds 10
    python tests/benchmarks/bench_speed.py --variant "one-thread:EMOTION_INFERENCE_THREADS=1" \
        --variant "before@/tmp/old-checkout:"      # servers side by side, rounds interleaved

Rows, each the median over --rounds rounds (one round runs every row in turn):
  predict     POST /predict, the 640x480 one-face JPEG, sequential requests: p50 ms, with
              httpx and (predict_lean) with the standard library's http.client, whose own
              cost per request is smaller: the difference is the client's share
  batch       POST /predict/batch with 32 copies of it: faces per second
  concurrent  32 clients posting it to /predict for --seconds: requests/s and p95 ms
  1080p       POST /predict?detector=full, a 1920x1080 JPEG with four faces: p50 ms
The floors run the same photos through `app.pipeline` in this process on one thread (decode,
detect, align and preprocess, the model), with the served settings; the batch floor is 32
copies prepared on as many threads as the service has workers, each with its own detector
instance as the service gives them, then one model call. Each
--variant NAME[@CHECKOUT]:KEY=VALUE,... is one more server, with those environment variables
and (after @) another checkout's code; every round measures each server in turn. Run it on an
idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` importable

from app.settings import Settings  # noqa: E402
from tests import images  # noqa: E402
from tests.servers import running_server  # noqa: E402

GOALS = {"predict": "<= 7 ms", "batch": ">= 400 faces/s", "concurrent": "p95 <= 400 ms"}
GOALS["1080p"] = "<= 20 ms"


@dataclass(frozen=True)
class Variant:
    """One server to measure: a name, the checkout it runs from, environment over ours."""

    name: str
    tree: Path = REPO
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Variant:
        """`NAME[@CHECKOUT]:KEY=VALUE,...`."""
        head, _, pairs = text.partition(":")
        name, _, tree = head.partition("@")
        env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        return cls(name, Path(tree).resolve() if tree else REPO, env)


def photos() -> dict[str, bytes]:
    return {
        "640x480": images.encode(images.astronaut_640x480(), "JPEG", quality=90),
        "1080p": images.encode(images.group_1080p(), "JPEG", quality=90),
    }


def floor_ms(analyzer, data: bytes, n: int) -> dict[str, float]:
    """Median milliseconds per stage of the in-process pipeline, and their sum."""
    from app.pipeline import prepare_image

    stages: dict[str, list[float]] = {}
    for i in range(n + 5):  # the first five warm up
        prepared = prepare_image(data, analyzer.model.spec, analyzer.options)
        t0 = time.perf_counter()
        analyzer.model.predict(prepared.batch)
        timing = prepared.timing | {"model": (time.perf_counter() - t0) * 1000}
        if i >= 5:
            for k, v in timing.items():
                stages.setdefault(k, []).append(v)
    medians = {k: statistics.median(v) for k, v in stages.items()}
    return medians | {"total": sum(medians.values())}


def batch_floor(settings: Settings, data: bytes, files: int, rounds: int) -> float:
    """Median faces/s of `files` copies through `app.pipeline` on the service's worker count."""
    from concurrent.futures import ThreadPoolExecutor

    from app.analyzer import Analyzer
    from app.pipeline import classify

    rates = []
    with Analyzer(settings=settings) as analyzer, ThreadPoolExecutor(analyzer.threads) as pool:
        for _ in range(rounds + 1):  # the first warms up
            t0 = time.perf_counter()
            images = list(pool.map(analyzer.prepare, [data] * files))
            faces = sum(len(p) for p in classify(analyzer.model, images))
            rates.append(faces / (time.perf_counter() - t0))
    return statistics.median(rates[1:])


def sequential(http: httpx.Client, data: bytes, n: int, params: dict, faces: int) -> float:
    """p50 client-side ms of n sequential POST /predict calls (after five warm-ups)."""
    files = {"file": ("photo.jpg", data, "image/jpeg")}
    latencies = []
    for i in range(n + 5):
        t0 = time.perf_counter()
        r = http.post("/predict", files=files, params=params)
        if i >= 5:
            latencies.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        assert len(r.json()["faces"]) == faces, r.json()
    return statistics.median(latencies)


def sequential_lean(url: str, data: bytes, n: int) -> float:
    """`sequential` for /predict through `http.client` on one kept-alive connection."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "benchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    conn = HTTPConnection(host, int(port), timeout=60)
    latencies = []
    try:
        for i in range(n + 5):
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            reply = response.read()
            if i >= 5:
                latencies.append((time.perf_counter() - t0) * 1000)
            assert response.status == 200, reply
    finally:
        conn.close()
    return statistics.median(latencies)


def batch_rate(http: httpx.Client, data: bytes, files: int, requests: int) -> float:
    """Faces per second over `requests` POST /predict/batch calls of `files` copies."""
    parts = [("files", (f"p{i}.jpg", data, "image/jpeg")) for i in range(files)]
    http.post("/predict/batch", files=parts).raise_for_status()
    faces, t0 = 0, time.perf_counter()
    for _ in range(requests):
        r = http.post("/predict/batch", files=parts)
        r.raise_for_status()
        faces += sum(len(x["faces"]) for x in r.json()["results"])
    assert faces == files * requests, faces
    return faces / (time.perf_counter() - t0)


async def concurrent(url: str, data: bytes, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p95 ms) of `clients` clients each posting to /predict in a loop."""
    files = {"file": ("photo.jpg", data, "image/jpeg")}
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        stop = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await http.post("/predict", files=files)
                r.raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return len(latencies) / elapsed, float(np.percentile(latencies, 95))


def one_round(url: str, data: dict[str, bytes], args: argparse.Namespace) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=120) as http:
        out = {
            "predict": sequential(http, data["640x480"], args.requests, {}, 1),
            "predict_lean": sequential_lean(url, data["640x480"], args.requests),
            "batch": batch_rate(http, data["640x480"], 32, args.batch_requests),
            "1080p": sequential(http, data["1080p"], args.requests // 2, {"detector": "full"}, 4),
        }
    rate, p95 = asyncio.run(concurrent(url, data["640x480"], 32, args.seconds))
    return out | {"concurrent_rate": rate, "concurrent_p95": p95}


def floors(models_dir: Path, data: dict[str, bytes], n: int) -> dict[str, dict[str, float]]:
    from app.analyzer import Analyzer

    settings = Settings(models_dir=models_dir)
    with Analyzer(settings=settings) as auto, Analyzer(detector="full", settings=settings) as full:
        out = {
            "640x480": floor_ms(auto, data["640x480"], n),
            "1080p": floor_ms(full, data["1080p"], n),
        }
    rate = batch_floor(settings, data["640x480"], 32, 5)
    return out | {"batch": {"rate": rate, "workers": settings.worker_threads}}


def stages_text(floor: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in floor.items() if k != "total")


def report(name: str, rounds: list[dict[str, float]], floor: dict[str, dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    cpus = len(os.sched_getaffinity(0))
    small, large = floor["640x480"], floor["1080p"]
    rows = [
        ("`POST /predict`, 640x480, 1 face, p50",
         f"{med['predict']:.1f} ms ({med['predict_lean']:.1f} with http.client)",
         f"{small['total']:.1f} ms ({stages_text(small)})", GOALS["predict"]),
        ("`POST /predict/batch`, 32 photos", f"{med['batch']:.0f} faces/s",
         f"{floor['batch']['rate']:.0f} faces/s ({floor['batch']['workers']} worker threads)",
         GOALS["batch"]),
        ("32 concurrent clients on `/predict`",
         f"{med['concurrent_rate']:.0f} req/s, p95 {med['concurrent_p95']:.0f} ms", "",
         GOALS["concurrent"]),
        ("1920x1080, 4 faces, `detector=full`, p50", f"{med['1080p']:.1f} ms",
         f"{large['total']:.1f} ms ({stages_text(large)})", GOALS["1080p"]),
    ]  # fmt: skip
    print(f"\n{name}: medians of {len(rounds)} rounds; {cpus} CPUs")
    print("| | served | in-process floor | goal |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="sequential, per round")
    parser.add_argument("--batch-requests", type=int, default=5, help="per round")
    parser.add_argument("--seconds", type=float, default=10.0, help="concurrent, per round")
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        default=[],
        metavar="NAME[@CHECKOUT]:KEY=VALUE,...",
        help="another server to measure beside this checkout's defaults (repeatable)",
    )
    args = parser.parse_args(argv)
    data = photos()
    floor = floors(args.models_dir, data, args.requests)
    base = {
        "EMOTION_MODELS_DIR": str(args.models_dir.resolve()),
        "EMOTION_ASSETS_DIR": str(Settings().assets_dir.resolve()),  # for other checkouts too
        "EMOTION_LOG_LEVEL": "warning",
    }
    variants = [Variant("served"), *args.variant]
    rounds: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    with ExitStack() as stack:
        urls = {
            v.name: stack.enter_context(
                running_server(["app"], base | v.env, ready_within_s=180, cwd=v.tree)
            )[1]
            for v in variants
        }
        for i in range(args.rounds):
            for name, url in urls.items():
                rounds[name].append(one_round(url, data, args))
                got = ", ".join(f"{k} {v:.1f}" for k, v in rounds[name][-1].items())
                print(f"round {i + 1}, {name}: {got}", flush=True)
    for name, measured in rounds.items():
        report(name, measured, floor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

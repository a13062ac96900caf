"""Load test: mixed good and bad traffic at rising concurrency, with pass/fail acceptance.

    python tests/benchmarks/load_test.py                      # serves models/ on a free port
    python tests/benchmarks/load_test.py --seconds 15 --levels 1,8,32,128
    python tests/benchmarks/load_test.py --url http://127.0.0.1:8000 --pid 1234

Without --url it starts `python -m app` on a free loopback port serving --models-dir (the
shipped models/) and reads the server's memory from /proc/<pid>/status; with --url, pass
--pid to get memory figures. Only loopback addresses are accepted. Each concurrency level
runs for --seconds or --max-requests requests, whichever comes first, with that many
client tasks sending, without pause or retry, a seeded mix of:

    single    POST /predict, 640x480 JPEG, one face (the scikit-image astronaut)
    large     POST /predict, 3000x2000 JPEG (the same photo upscaled)
    group     POST /predict?detector=full, 640x360 JPEG with three faces
    batch     POST /predict/batch, 4 files: photo, group, garbage, photo
    garbage   POST /predict, random bytes                    -> 400
    truncated POST /predict, a JPEG cut in half              -> 400
    too-large POST /predict, 10.5 MB upload                  -> 413
    healthz   GET /healthz                                   -> 200

A 503 with problem type `overloaded` (and Retry-After) is the service refusing work past
`max_in_flight`: deliberate, counted, not a failure. The run PASSES when no request went
unanswered (connection error or timeout), no response was a 5xx other than those 503s, every
answer had the status its kind expects, every batch answer held exactly one result per file
in upload order, and the server's peak RSS (VmHWM) stayed under --max-rss-mb.

Latencies are measured by the load generator itself, one Python process: at high
concurrency its own event loop saturates and inflates them. So a separate probe process
also times GET /healthz every 0.2 s during each level (the "probe" column): that is what a
liveness check sees.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` importable

from tests import images  # noqa: E402
from tests.servers import running_server  # noqa: E402

BATCH_NAMES = ("0-photo.jpg", "1-group.jpg", "2-garbage.bin", "3-photo.jpg")


def _jpeg(rgb: np.ndarray) -> bytes:
    return images.encode(rgb, "JPEG", quality=90)


@dataclass(frozen=True)
class Payloads:
    photo: bytes
    large: bytes
    group: bytes
    garbage: bytes
    truncated: bytes
    too_large: bytes

    @classmethod
    def build(cls) -> Payloads:
        astro = images.astronaut_640x480()
        photo = _jpeg(astro)
        rng = np.random.default_rng(0)
        return cls(
            photo=photo,
            large=_jpeg(cv2.resize(astro, (3000, 2000), interpolation=cv2.INTER_CUBIC)),
            group=_jpeg(images.group()),
            garbage=rng.integers(0, 256, 20_000, np.uint8).tobytes(),
            truncated=photo[: len(photo) // 2],
            too_large=rng.integers(0, 256, 10_500_000, np.uint8).tobytes(),
        )


# kind -> (weight, statuses that count as a correct answer besides an overload 503)
KINDS: dict[str, tuple[int, frozenset[int]]] = {
    "single": (34, frozenset({200})),
    "large": (8, frozenset({200})),
    "group": (10, frozenset({200})),
    "batch": (20, frozenset({200})),
    "garbage": (10, frozenset({400})),
    "truncated": (8, frozenset({400})),
    "too-large": (2, frozenset({413})),
    "healthz": (8, frozenset({200})),
}


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no answer (connection error or timeout)
    seconds: float
    problem: str | None = None  # why the answer is wrong, when it is


@dataclass
class Level:
    concurrency: int
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    rss_peak_mb: float | None = None
    rss_end_mb: float | None = None
    probe: list[float] = field(default_factory=list)  # /healthz seconds, separate process

    def failures(self) -> list[str]:
        out = []
        for o in self.outcomes:
            if o.status is None:
                out.append(f"{o.kind}: no answer ({o.problem})")
            elif o.problem:
                out.append(f"{o.kind}: {o.status} {o.problem}")
        return out


async def send(http: httpx.AsyncClient, kind: str, p: Payloads) -> Outcome:
    t0 = time.perf_counter()
    try:
        if kind == "healthz":
            r = await http.get("/healthz")
        elif kind == "batch":
            bodies = (p.photo, p.group, p.garbage, p.photo)
            files = [
                ("files", (n, b, "image/jpeg")) for n, b in zip(BATCH_NAMES, bodies, strict=True)
            ]
            r = await http.post("/predict/batch", files=files, params={"detector": "full"})
        else:
            body, params = {
                "single": (p.photo, {}),
                "large": (p.large, {}),
                "group": (p.group, {"detector": "full"}),
                "garbage": (p.garbage, {}),
                "truncated": (p.truncated, {}),
                "too-large": (p.too_large, {}),
            }[kind]
            r = await http.post("/predict", files={"file": ("f.jpg", body)}, params=params)
        await r.aread()
    except httpx.HTTPError as e:
        return Outcome(kind, None, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    return Outcome(kind, r.status_code, time.perf_counter() - t0, check(kind, r))


def check(kind: str, r: httpx.Response) -> str | None:
    """Why this answer is wrong, or None when it is right."""
    if r.status_code == 503:
        ok = (
            r.headers.get("retry-after") == "1"
            and r.headers.get("content-type") == "application/problem+json"
            and r.json().get("type", "").endswith(":overloaded")
        )
        return None if ok else f"a 503 that is not an overload refusal: {r.text[:200]}"
    if r.status_code not in KINDS[kind][1]:
        return f"unexpected status: {r.text[:200]}"
    if kind == "batch":
        results = r.json()["results"]
        names = [x.get("filename") for x in results]
        if names != list(BATCH_NAMES):
            return f"batch results {names} do not match the files {list(BATCH_NAMES)}"
        shapes = ["error" in x for x in results]
        if shapes != [False, False, True, False]:
            return f"batch items have the wrong kinds (error flags {shapes})"
    return None


async def client_task(
    http: httpx.AsyncClient, p: Payloads, rng: random.Random, level: Level, stop: float, cap: int
) -> None:
    names, weights = list(KINDS), [w for w, _ in KINDS.values()]
    while time.perf_counter() < stop and len(level.outcomes) < cap:
        level.outcomes.append(await send(http, rng.choices(names, weights)[0], p))


def memory_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


PROBE = """
import json, sys, time, httpx
url, until, out = sys.argv[1], time.time() + float(sys.argv[2]), []
with httpx.Client(base_url=url, timeout=30) as http:
    while time.time() < until:
        t0 = time.perf_counter()
        try:
            http.get("/healthz").raise_for_status()
            out.append(time.perf_counter() - t0)
        except httpx.HTTPError:
            out.append(float("inf"))
        time.sleep(0.2)
print(json.dumps(out))
"""


async def run_level(
    url: str, concurrency: int, seconds: float, cap: int, timeout: float, p: Payloads, pid: int
) -> Level:
    level = Level(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, url, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        t0 = time.perf_counter()
        stop = t0 + seconds
        tasks = [
            client_task(http, p, random.Random(concurrency * 1000 + i), level, stop, cap)
            for i in range(concurrency)
        ]
        await asyncio.gather(*tasks)
        level.seconds = time.perf_counter() - t0
    out, _ = await probe.communicate()
    level.probe = json.loads(out or b"[]")
    if pid:
        level.rss_peak_mb = memory_mb(pid, "VmHWM")
        level.rss_end_mb = memory_mb(pid, "VmRSS")
    return level


@contextmanager
def local_server(models_dir: Path, log_path: Path) -> Iterator[tuple[str, int]]:
    """`python -m app` on a free loopback port; yields (url, pid) once /readyz is 200."""
    env = {
        "EMOTION_MODELS_DIR": str(models_dir.resolve()),
        "EMOTION_LOG_LEVEL": os.environ.get("EMOTION_LOG_LEVEL", "warning"),
    }
    with running_server(["app"], env, log_path, ready_within_s=180) as (proc, url):
        yield url, proc.pid


def loopback_only(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"refusing {url}: this load test only targets loopback addresses")
    return url.rstrip("/")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0 if values else float("nan")


def report(levels: list[Level], max_rss_mb: float) -> bool:
    print()
    print("| concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | statuses | "
          "no answer | wrong | probe p50/max ms | peak RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for lv in levels:
        times = [o.seconds for o in lv.outcomes if o.status is not None]
        statuses = Counter(o.status for o in lv.outcomes if o.status is not None)
        status_text = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        unanswered = sum(o.status is None for o in lv.outcomes)
        wrong = sum(o.status is not None and o.problem is not None for o in lv.outcomes)
        rss = f"{lv.rss_peak_mb:.0f}" if lv.rss_peak_mb is not None else "n/a"
        probe = f"{pct(lv.probe, 50):.0f} / {max(lv.probe) * 1000:.0f}" if lv.probe else "n/a"
        print(
            f"| {lv.concurrency} | {len(lv.outcomes)} | {len(lv.outcomes) / lv.seconds:.1f} | "
            f"{pct(times, 50):.0f} | {pct(times, 95):.0f} | {pct(times, 99):.0f} | "
            f"{status_text} | {unanswered} | {wrong} | {probe} | {rss} |"
        )
    print()
    print("p50 latency in ms by kind (answered requests):")
    for lv in levels:
        by_kind = {
            k: [o.seconds for o in lv.outcomes if o.kind == k and o.status not in (None, 503)]
            for k in KINDS
        }
        parts = [f"{k} {statistics.median(v) * 1000:.0f}" for k, v in by_kind.items() if v]
        print(f"  c={lv.concurrency}: " + ", ".join(parts))

    failures = [f for lv in levels for f in lv.failures()]
    peaks = [lv.rss_peak_mb for lv in levels if lv.rss_peak_mb is not None]
    checks = {
        "every request answered": not any(o.status is None for lv in levels for o in lv.outcomes),
        "every liveness probe answered": all(t != float("inf") for lv in levels for t in lv.probe),
        "no 5xx except overload 503s, every status as expected": not any(
            o.status is not None and o.problem for lv in levels for o in lv.outcomes
        ),
        f"peak RSS under {max_rss_mb:.0f} MiB": not peaks or max(peaks) < max_rss_mb,
    }
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for f in failures[:20]:
        print("  -", f)
    passed = all(checks.values())
    print("\nPASS" if passed else "\nFAIL")
    return passed


async def main_async(args: argparse.Namespace, url: str, pid: int) -> list[Level]:
    p = Payloads.build()
    print(
        f"payloads: photo {len(p.photo):,} B, large {len(p.large):,} B, group {len(p.group):,} B,"
        f" too-large {len(p.too_large):,} B"
    )
    levels = []
    for c in args.levels:
        level = await run_level(url, c, args.seconds, args.max_requests, args.timeout, p, pid)
        rss = f", peak RSS {level.rss_peak_mb:.0f} MiB" if level.rss_peak_mb else ""
        print(f"concurrency {c}: {len(level.outcomes)} requests in {level.seconds:.1f} s{rss}")
        levels.append(level)
    return levels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running service (loopback only); default: start one")
    parser.add_argument("--pid", type=int, default=0, help="server pid for RSS with --url")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument(
        "--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 128]
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="per level")
    parser.add_argument("--max-requests", type=int, default=5000, help="per level")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--max-rss-mb", type=float, default=1500.0)
    args = parser.parse_args()

    if args.url:
        levels = asyncio.run(main_async(args, loopback_only(args.url), args.pid))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "server.log"
            with local_server(args.models_dir, log) as (url, pid):
                print(f"serving {args.models_dir} at {url} (pid {pid}), "
                      f"idle RSS {memory_mb(pid, 'VmRSS'):.0f} MiB")  # fmt: skip
                levels = asyncio.run(main_async(args, url, pid))
            errors = [x for x in log.read_text().splitlines() if "Traceback" in x or " ERROR " in x]
            if errors:
                print(f"server log: {len(errors)} error lines, first: {errors[0]}")
    return 0 if report(levels, args.max_rss_mb) else 1


if __name__ == "__main__":
    raise SystemExit(main())

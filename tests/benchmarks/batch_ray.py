"""Images per second of `emotion batch` on Ray beside `emotion score` and /predict/batch
(a script, not a test).

    python tests/benchmarks/batch_ray.py                     # 2,000 photos, 3 rounds each
    python tests/benchmarks/batch_ray.py --photos 500 --rounds 1

It writes --photos generated photos (tests.images.photo_folder: one face, three faces or
none, some turned, JPEG and PNG) to a temporary folder and scores all of them with each of:
`emotion batch` on a local Ray of 2 CPUs with 1 and with 2 actors (the seconds count from
the dataset's start, actor start-up and model loading included), `emotion score` (in-process,
two threads), and POST /predict/batch of 32 files at a time to a local uvicorn, one request
after another. Every method gets the same models (--models-dir, default models/) and
EMOTION_INFERENCE_THREADS=1. It prints the median images/s of --rounds rounds per method.
Run it on an otherwise idle machine; anything else using the CPU lowers the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` and `app` importable
os.chdir(REPO)  # Ray's local workers import `app` from the driver's working directory

from tests import images  # noqa: E402
from tests.benchmarks.bench_api import local_server, models_dir_for  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ray_batch(folder: Path, out: Path, actors: int) -> float:
    from app.batch import run

    return run(str(folder), out, actors=actors, batch_size=16).seconds


def cli_score(folder: Path, out: Path) -> float:
    from app.cli import main

    with contextlib.redirect_stderr(io.StringIO()):  # its per-image progress line
        return timed(lambda: main(["score", str(folder), "--out", str(out)]))


def http_batch(url: str, files: list[Path], per_request: int = 32) -> float:
    with httpx.Client(base_url=url, timeout=120) as http:

        def send(chunk: list[Path]) -> None:
            parts = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in chunk]
            http.post("/predict/batch", files=parts).raise_for_status()

        send(files[:per_request])  # warm-up
        chunks = [files[i : i + per_request] for i in range(0, len(files), per_request)]
        return timed(lambda: [send(c) for c in chunks])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per method; the median")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args(argv)

    import ray

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        models_dir, described = models_dir_for(args.models_dir, tmp / "models")
        os.environ |= {"EMOTION_MODELS_DIR": str(models_dir), "EMOTION_INFERENCE_THREADS": "1"}
        files = images.photo_folder(tmp / "photos", args.photos)
        seconds: dict[str, list[float]] = {}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for _ in range(args.rounds):
                for actors in (1, 2):
                    name = f"emotion batch, Ray, {actors} actor{'s' * (actors > 1)}"
                    seconds.setdefault(name, []).append(
                        ray_batch(tmp / "photos", tmp / "out.parquet", actors)
                    )
        finally:
            ray.shutdown()
        for _ in range(args.rounds):
            seconds.setdefault("emotion score (2 threads)", []).append(
                cli_score(tmp / "photos", tmp / "out.csv")
            )
        with local_server(models_dir, 0) as url:
            for _ in range(args.rounds):
                seconds.setdefault("POST /predict/batch, 32 files", []).append(
                    http_batch(url, files)
                )
    print(f"\n{args.photos} photos, {described}, {os.cpu_count()} CPUs, rounds: {args.rounds}")
    for name, values in seconds.items():
        rates = sorted(args.photos / s for s in values)
        print(
            f"  {name:<34} {statistics.median(rates):7.1f} images/s  (rounds: "
            + ", ".join(f"{r:.1f}" for r in rates)
            + ")"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

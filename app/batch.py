"""`emotion batch INPUT OUTPUT`: the service's pipeline over millions of photos, on Ray Data.

    emotion batch photos/ faces.parquet                       # a local Ray on this machine
    emotion batch 'archive/**/*.jpg' faces.parquet --actors 8
    emotion batch manifest.parquet faces.parquet --address ray://head:10001

Each actor builds one `Analyzer` (the model and detectors load once per actor), reads the
photos of its batch itself, prepares them with `Analyzer.prepare` and sends every face of the
batch through onnxruntime in one `classify` call, as `/predict/batch` does. The output has
`emotion score`'s columns plus `error`; every input row appears in it exactly once: one row
per face, or one row with no face fields (no face found; `error` empty) or with `error` set
(an unreadable photo). An actor that dies is restarted by Ray and its batch scored again
from the start (tests/test_batch.py kills one and checks no photo is lost or repeated).

Ray is the optional extra `batch` (`pip install -e ".[batch]"`); the service never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from app.face_table import COLUMNS, rows
from app.labels import EMOTIONS
from app.runtime import DetectorChoice

ERROR_COLUMN = "error"
RETRIES = 3
"""Restarts of a dead actor and retries of its batch: enough for a lost worker, finite so a
photo that kills the process every time ends the run instead of looping."""


def require_ray() -> Any:
    """The `ray` module, or a clear ImportError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(
            'emotion batch needs Ray: pip install -e ".[batch]" (or pip install "ray[data]")'
        ) from e
    return ray


def schema() -> Any:
    """The output's Arrow schema: `emotion score`'s columns, nullable, then `error`."""
    import pyarrow as pa

    types = {"file": pa.string(), "face": pa.int64(), "emotion": pa.string()}
    types |= {c: pa.int64() for c in ("x", "y", "width", "height")}
    types |= {c: pa.float64() for c in ("score", *EMOTIONS)}
    return pa.schema([(c, types[c]) for c in COLUMNS] + [(ERROR_COLUMN, pa.string())])


def empty_row(file: str, error: str | None) -> dict:
    return {**dict.fromkeys(COLUMNS), "file": file, ERROR_COLUMN: error}


class Scorer:
    """A Ray Data actor: one Analyzer, and a batch of paths in, a table of face rows out."""

    def __init__(self, model: str | None, detector: DetectorChoice) -> None:
        from app.analyzer import Analyzer
        from app.settings import Settings

        settings = Settings()
        if "detector_threads" not in settings.model_fields_set:  # Ray gives each actor 1 CPU
            settings = settings.model_copy(update={"detector_threads": 1})
        self.analyzer = Analyzer(model, detector, settings=settings, threads=1)

    def read(self, file: str) -> bytes:
        return Path(file).read_bytes()

    def __call__(self, batch: dict[str, Any]) -> Any:
        import pyarrow as pa

        from app.pipeline import classify

        files = [str(f) for f in batch["file"]]
        prepared: dict[int, Any] = {}
        errors: dict[int, str] = {}
        for i, file in enumerate(files):
            try:  # a bad file becomes an error row, never a lost row or a failed batch
                prepared[i] = self.analyzer.prepare(self.read(file))
            except Exception as e:
                errors[i] = getattr(e, "detail", None) or str(e) or type(e).__name__
        probs = dict(
            zip(prepared, classify(self.analyzer.model, list(prepared.values())), strict=True)
        )
        out: list[dict] = []
        for i, file in enumerate(files):
            p = probs.get(i)
            if isinstance(p, Exception):
                errors[i] = str(p) or type(p).__name__
            if i in errors:
                out.append(empty_row(file, errors[i]))
                continue
            faces = rows(Path(file), self.analyzer.result(prepared[i], p))
            out.extend(
                [{**r, "file": file, ERROR_COLUMN: None} for r in faces] or [empty_row(file, None)]
            )
        return pa.Table.from_pylist(out, schema=schema())


@dataclass(frozen=True)
class Summary:
    images: int
    faces: int
    without_face: int
    errors: int
    seconds: float

    def line(self) -> str:
        return (
            f"scored {self.images} images in {self.seconds:.1f} s "
            f"({self.images / max(self.seconds, 1e-9):.1f} images/s): {self.faces} faces, "
            f"{self.without_face} without a face, {self.errors} errors"
        )


def forwarded_env() -> dict[str, str]:
    """The EMOTION_* settings of this process, for the workers' Analyzer (runtime_env)."""
    return {k: v for k, v in os.environ.items() if k.startswith("EMOTION_")}


def run(
    source: str,
    output: str | os.PathLike,
    *,
    address: str | None = None,
    actors: int = 2,
    batch_size: int = 16,
    model: str | None = None,
    detector: DetectorChoice = "auto",
    working_dir: str | None = None,
    scorer: type[Scorer] = Scorer,
) -> Summary:
    """Score every photo of `source` into one Parquet file at `output`, on Ray.

    Without `address` a local Ray starts; `working_dir` ships that folder (code and models)
    to every worker. `scorer` is the actor class (the fault test swaps in one that dies).
    """
    ray = require_ray()
    import pyarrow.parquet as pq

    from app.batch_input import read_listing

    runtime_env: dict[str, Any] = {"env_vars": forwarded_env()}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, runtime_env=runtime_env, include_dashboard=False)
    t0 = time.perf_counter()
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        scored = read_listing(source).map_batches(
            scorer,
            fn_constructor_args=(model, detector),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            runtime_env={"env_vars": forwarded_env()},
        )
        images = faces = without_face = errors = 0
        with pq.ParquetWriter(output, schema()) as writer:
            for table in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                table = table.select(schema().names).cast(schema())
                writer.write_table(table)
                face = table.column("face").to_pylist()
                error = table.column(ERROR_COLUMN).to_pylist()
                images += sum(f is None or f == 0 for f in face)
                faces += sum(f is not None for f in face)
                errors += sum(e is not None for e in error)
                without_face += sum(
                    f is None and e is None for f, e in zip(face, error, strict=True)
                )
    finally:
        if started:
            ray.shutdown()
    return Summary(images, faces, without_face, errors, time.perf_counter() - t0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a folder, a glob, or a manifest (.csv/.parquet, a path column)")
    p.add_argument("output", help="Parquet file, one row per face (plus error rows)")
    p.add_argument("--address", help="a Ray cluster (ray://head:10001); EMOTION_BATCH_ADDRESS")
    p.add_argument("--actors", type=int, help="scoring actors, one CPU each; EMOTION_BATCH_ACTORS")
    p.add_argument("--batch-size", type=int, help="photos per actor call; EMOTION_BATCH_SIZE")
    p.add_argument("--model", help="registered model (default: the registry's default)")
    p.add_argument("--detector", choices=get_args(DetectorChoice), default="auto")
    p.add_argument(
        "--working-dir", help="ship this folder (code, models/) to the workers (runtime_env)"
    )


def command(args: argparse.Namespace) -> int:
    from app.settings import Settings

    settings = Settings()
    try:
        summary = run(
            args.input,
            args.output,
            address=args.address or settings.batch_address,
            actors=args.actors or settings.batch_actors,
            batch_size=args.batch_size or settings.batch_size,
            model=args.model,
            detector=args.detector,
            working_dir=args.working_dir,
        )
    except (ImportError, ValueError) as e:
        print(f"emotion batch: {e}", file=sys.stderr)
        return 2
    print(summary.line(), file=sys.stderr)
    return 1 if summary.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.batch", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

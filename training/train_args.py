"""The `train` subcommand's arguments and their types, shared by the command line and by
`recover`, which reads a member's recorded training command back with the same parser."""

from __future__ import annotations

import argparse
import re


def parse_duration(text: str) -> float:
    """'2h', '90m', '45s', '1h30m' or plain seconds to seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 2h, 90m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def weights_arg(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _checked(kind: type, ok, wanted: str):
    """An argparse type: `kind(text)`, refused unless `ok(value)` ("must be `wanted`")."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} (must be {wanted})")
        return value

    return parse


positive_int = _checked(int, lambda v: v > 0, "positive")
positive_float = _checked(float, lambda v: v > 0, "positive")
fraction = _checked(float, lambda v: 0 <= v <= 1, "between 0 and 1")
non_negative = _checked(float, lambda v: v >= 0, "0 or more")


def budget_arg(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the time budget must be positive")
    return seconds


def model_name(text: str) -> str:
    """A registry name (also the ONNX file's stem): checked before anything is written."""
    from app.registry import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model name: up to 64 letters, digits, '_', '.', '-'"
        )
    return text


def add_train_arguments(t: argparse.ArgumentParser) -> None:
    """The `train` subcommand's options."""
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True, help="Kaggle-layout folder with train/<class>/*")
    t.add_argument(
        "--add-data",
        metavar="DIR",
        help="another Kaggle-layout folder whose train/ joins training only (photo folders are "
        "framed by the service's detector and aligner); validation stays --data's split",
    )
    t.add_argument(
        "--add-repeat",
        type=positive_int,
        default=1,
        help="how many times each --add-data face appears per epoch (default 1)",
    )
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--epochs", type=positive_int)
    t.add_argument("--batch-size", type=positive_int)
    t.add_argument(
        "--learning-rate", type=positive_float, help="peak learning rate (default: the recipe's)"
    )
    t.add_argument(
        "--mixup",
        type=non_negative,
        help="mixup Beta alpha, e.g. 0.2; 0 = off (default: the recipe's)",
    )
    t.add_argument(
        "--one-resampling",
        action="store_true",
        help="rotate, shear, shift and zoom each face in one affine map, so it is resampled "
        "(and blurred) once rather than once per transform",
    )
    t.add_argument(
        "--augment",
        choices=("none", "study", "standard", "photo"),
        help="augmentation preset instead of the recipe's (standard: flip, rotation, shift, "
        "zoom, erasing; study: flip, rotation, shift, zoom as one map; photo: standard with shear "
        "plus lighting, noise, blur, downscaling and JPEG artefacts)",
    )
    t.add_argument(
        "--optimizer",
        choices=("adam", "adam_cosine", "sgd_cosine"),
        help="instead of the recipe's: constant Adam, or Adam / Nesterov SGD with warm-up and "
        "cosine decay over the epochs or the time budget",
    )
    t.add_argument("--time-budget", type=budget_arg, help="e.g. 2h, 90m")
    t.add_argument(
        "--weights",
        type=weights_arg,
        default="imagenet",
        help="imagenet, a local weights file, or none (transfer models only)",
    )
    t.add_argument("--seed", type=int, default=42)
    t.add_argument(
        "--split-seed",
        type=int,
        help="seed of the validation split (default: --seed); give ensemble members the same one",
    )
    t.add_argument("--limit-per-class", type=positive_int)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--no-class-weights", action="store_true")
    t.add_argument("--no-mixed-precision", action="store_true", help="train in float32")
    t.add_argument(
        "--teacher",
        help="run or ensemble folder to distil from (same data and validation split)",
    )
    t.add_argument(
        "--teacher-weight",
        type=fraction,
        default=0.7,
        help="share of the teacher's probabilities in each training target (default 0.7)",
    )
    t.add_argument("--init-from", help="run of the same architecture whose weights to start from")
    t.add_argument(
        "--monitor",
        choices=("val_loss", "val_accuracy"),
        default="val_loss",
        help="what picks best.keras: lowest validation loss (default) or highest accuracy",
    )


def train_options(args: argparse.Namespace):
    """The `train` subcommand's arguments as TrainOptions (also read back by `recover`)."""
    from training.fit import TrainOptions

    return TrainOptions(
        model=args.model,
        data=args.data,
        out=args.out,
        add_data=args.add_data,
        add_repeat=args.add_repeat,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        time_budget_s=args.time_budget,
        weights=args.weights,
        seed=args.seed,
        split_seed=args.split_seed,
        limit_per_class=args.limit_per_class,
        resume=args.resume,
        class_weights=not args.no_class_weights,
        mixed_precision=not args.no_mixed_precision,
        teacher=args.teacher,
        teacher_weight=args.teacher_weight,
        init_from=args.init_from,
        mixup=args.mixup,
        one_resampling=args.one_resampling,
        monitor=args.monitor,
        augment=args.augment,
        optimizer=args.optimizer,
    )


def parse_train_command(words: list[str]):
    """TrainOptions from the words after `python -m training train`."""
    parser = argparse.ArgumentParser(prog="python -m training train")
    add_train_arguments(parser)
    return train_options(parser.parse_args(words))

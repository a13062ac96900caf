"""Fit a registered architecture on a Kaggle-layout folder and leave a resumable run folder.

The run folder holds `config.json` (the exact command and data fingerprint),
`history.csv`, `learning_curves.png`, `best.keras` (lowest validation loss, or highest
validation accuracy with `monitor="val_accuracy"`), and `last.keras` + `state.json` (for
`--resume`). The validation split is not stored: it is re-derived from the seed and
fraction in `config.json`, as `evaluate` does.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import keras
import numpy as np

from training import architectures
from training.augment import PRESETS
from training.data import (
    Split,
    class_weights,
    load_split,
    recorded_split_seed,
)
from training.plots import plot_learning_curves
from training.run_config import RunConfig, RunOptions, read_run_config, write_run_config
from training.split import VAL_FRACTION, split_train


@dataclass
class TrainOptions:
    model: str
    data: str
    out: str
    add_data: str | None = None  # a folder whose train/ joins training, never validation
    add_repeat: int = 1  # copies of each added face per epoch
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None  # peak; the recipe's when None
    time_budget_s: float | None = None
    weights: str | None = None
    seed: int = 42
    split_seed: int | None = None  # validation split (and subset); defaults to `seed`
    limit_per_class: int | None = None
    resume: bool = False
    class_weights: bool = True
    mixed_precision: bool = True
    teacher: str | None = None  # a run or ensemble folder to distil from
    teacher_weight: float = 0.7  # share of the teacher's probabilities in each target
    init_from: str | None = None  # a run of the same architecture to start from
    mixup: float | None = None  # Beta alpha of mixup; the recipe's when None, 0 = off
    one_resampling: bool = False  # the recipe's geometric augmentation as one affine map
    augment: str | None = None  # a name in training.augment.PRESETS; the recipe's when None
    optimizer: str | None = None  # "adam", "adam_cosine" or "sgd_cosine"; the recipe's when None
    # What picks best.keras. Label smoothing and class weights let the validation loss rise
    # while accuracy still improves late in a cycle, so later cycles are better kept by accuracy.
    monitor: str = "val_loss"


class ProgressSchedule(keras.callbacks.Callback):
    """Warm-up then cosine decay of the learning rate over training *progress*.

    Progress is the larger of the step fraction and the time-budget fraction, so a run
    that is cut short by `--time-budget` still ends with an annealed learning rate
    instead of stopping at a high one.
    """

    def __init__(
        self,
        peak: float,
        total_steps: int,
        warmup_steps: int,
        budget_s: float | None,
        elapsed_before: float,
        cosine: bool,
    ) -> None:
        super().__init__()
        self.peak, self.total, self.warmup = peak, max(1, total_steps), warmup_steps
        self.budget, self.cosine = budget_s, cosine
        self.t0 = time.monotonic() - elapsed_before

    def lr_at(self, step: int) -> float:
        if not self.cosine:
            return self.peak
        if step < self.warmup:
            return self.peak * (0.1 + 0.9 * step / self.warmup)
        progress = step / self.total
        if self.budget:
            progress = max(progress, (time.monotonic() - self.t0) / self.budget)
        return self.peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.model.optimizer.learning_rate.assign(self.lr_at(int(self.model.optimizer.iterations)))


class TimeBudget(keras.callbacks.Callback):
    """Stop cleanly when the next epoch would not fit in the budget (best checkpoint kept)."""

    def __init__(self, budget_s: float, elapsed_before: float) -> None:
        super().__init__()
        self.budget = budget_s
        self.t0 = time.monotonic() - elapsed_before
        self.epoch_start = time.monotonic()
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None) -> None:
        now = time.monotonic()
        if (now - self.t0) + (now - self.epoch_start) > self.budget:
            print(f"time budget of {self.budget:.0f}s reached after epoch {epoch + 1}; stopping")
            self.model.stop_training = True
            self.stopped = True


class SaveBest(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves `saved` (the model) whatever `fit` trains (maybe its view)."""

    def __init__(self, saved: keras.Model, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saved = saved

    def set_model(self, model) -> None:
        super().set_model(self.saved)


class RunState(keras.callbacks.Callback):
    """Save `last.keras`, `state.json` and the learning-curve plot after every epoch."""

    def __init__(
        self,
        run: Path,
        checkpoint: keras.callbacks.ModelCheckpoint,
        elapsed_before: float,
        saved: keras.Model,
    ) -> None:
        super().__init__()
        self.run, self.checkpoint, self.saved = run, checkpoint, saved
        self.t0 = time.monotonic() - elapsed_before

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.saved.save(self.run / "last.keras")
        state = {
            "epochs_done": epoch + 1,
            "monitor": self.checkpoint.monitor,
            "best": float(self.checkpoint.best),
            "elapsed_s": time.monotonic() - self.t0,
        }
        (self.run / "state.json").write_text(json.dumps(state, indent=2))
        plot_learning_curves([self.run / "history.csv"], self.run / "learning_curves.png")


def with_added(train_split: Split, opts: TrainOptions) -> tuple[Split, str | None]:
    """The training half plus `opts.add_repeat` copies of `opts.add_data`'s train/ split.

    The added faces never enter validation, so runs with and without them keep one validation
    split and can be compared or ensembled.
    """
    if not opts.add_data:
        return train_split, None
    added, fingerprint = load_split(opts.add_data, "train")
    x = np.concatenate([train_split.x] + [added.x] * opts.add_repeat)
    y = np.concatenate([train_split.y] + [added.y] * opts.add_repeat)
    print(f"{opts.add_data}: {len(added)} faces added to training, x{opts.add_repeat}")
    return Split(x, y), fingerprint


# What a resumed run takes from its command line; every other option is the run's own.
RESUME_OVERRIDES = ("data", "out", "epochs", "time_budget_s", "resume")


def resumed_options(given: TrainOptions, recorded: dict) -> TrainOptions:
    """The run's recorded options, except RESUME_OVERRIDES; says which given values lose.

    A resumed run must keep its seeds, subset and class weighting: a different split seed,
    for one, would train on the validation faces that evaluation and ensembles rely on.
    """
    names = [f.name for f in fields(TrainOptions)]
    kept = {k: v for k, v in recorded.items() if k in names}
    for name in names:
        if name in RESUME_OVERRIDES or name not in kept:
            continue
        if getattr(given, name) != kept[name]:
            flag = "--" + name.removesuffix("_s").replace("_", "-")
            print(f"resuming: {flag} {kept[name]} as the run started, not {getattr(given, name)}")
    return replace(given, **{k: v for k, v in kept.items() if k not in RESUME_OVERRIDES})


OPTIMIZERS = ("adam", "adam_cosine", "sgd_cosine")


def _optimizer(name: str, lr: float, weight_decay: float) -> keras.optimizers.Optimizer:
    if name == "sgd_cosine":
        return keras.optimizers.SGD(
            lr, momentum=0.9, nesterov=True, weight_decay=weight_decay or None
        )
    return keras.optimizers.Adam(lr, weight_decay=weight_decay or None)


def train(opts: TrainOptions) -> Path:
    """Run (or resume) one training run and return the run folder."""
    if not 0.0 <= opts.teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must lie in [0, 1], not {opts.teacher_weight}")
    run = Path(opts.out)
    state_file = run / "state.json"
    state = json.loads(state_file.read_text()) if opts.resume and state_file.exists() else None
    if opts.resume and state is None:
        print(f"no finished epoch in {run}; starting a new run")
    if state is None and not opts.resume and (run / "history.csv").exists():
        raise FileExistsError(f"{run} already holds a run; use --resume or another --out")
    recorded = read_run_config(run) if state is not None else None
    if recorded is not None:
        # runs from before --monitor kept the lowest validation loss
        opts = resumed_options(opts, {"monitor": "val_loss"} | recorded.options.recorded())
    arch = architectures.get(opts.model)
    recipe = arch.recipe
    optimizer = opts.optimizer or recipe.optimizer
    if optimizer not in OPTIMIZERS:
        raise KeyError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    augment = PRESETS[opts.augment] if opts.augment else recipe.augment
    # tf.data only exists under TensorFlow; elsewhere the input runs inside a training view
    tf_data = keras.backend.backend() == "tensorflow"
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if opts.mixed_precision else "float32")
    keras.utils.set_random_seed(opts.seed)

    train_split, val_split, fingerprint = split_train(
        opts.data, opts.limit_per_class, recorded_split_seed(asdict(opts)), VAL_FRACTION
    )
    if recorded is not None and fingerprint != recorded.data_fingerprint:
        raise RuntimeError(
            f"{opts.data} is not the data {run} started on "
            f"(fingerprint {fingerprint}, run {recorded.data_fingerprint})"
        )
    train_split, added_fingerprint = with_added(train_split, opts)
    if recorded is not None and added_fingerprint != recorded.added_data_fingerprint:
        raise RuntimeError(f"{opts.add_data} is not the added data {run} started on")
    run.mkdir(parents=True, exist_ok=True)  # only once the data loaded: no empty run folders
    epochs = opts.epochs or (recorded and recorded.epochs) or recipe.epochs
    batch = opts.batch_size or recipe.batch_size
    peak_lr = opts.learning_rate or recipe.learning_rate
    mixup = recipe.mixup if opts.mixup is None else opts.mixup
    weights = (
        class_weights(train_split.y, recipe.class_weight_power) if opts.class_weights else None
    )

    if state is None:
        config = RunConfig(
            model=arch.name,
            command="python -m training " + shlex.join(sys.argv[1:]),
            options=asdict(opts),
            epochs=epochs,
            batch_size=batch,
            learning_rate=peak_lr,
            mixup=mixup,
            recipe=asdict(recipe),
            input=asdict(arch.input),
            class_weights=weights,
            data_fingerprint=fingerprint,
            added_data_fingerprint=added_fingerprint,
            val_fraction=VAL_FRACTION,
        )
        write_run_config(run, config)
        model = arch.build(opts.weights)
        if opts.weights is None:
            model.trainable = True  # from scratch, a frozen layer would keep its random weights
        if opts.init_from:
            from training.graph import load_best_weights

            load_best_weights(model, opts.init_from)
        initial_epoch, elapsed, best = 0, 0.0, None
    else:
        config = recorded
        # A resumed run keeps its batch size, peak learning rate and mixup; only --epochs may grow.
        config.epochs = epochs
        config.options = RunOptions.model_validate(
            config.options.recorded() | {k: getattr(opts, k) for k in RESUME_OVERRIDES}
        )
        config.resumed_with = [
            *config.resumed_with,
            "python -m training " + shlex.join(sys.argv[1:]),
        ]
        write_run_config(run, config)
        batch = config.batch_size
        peak_lr = recipe.learning_rate if config.learning_rate is None else config.learning_rate
        mixup = recipe.mixup if config.mixup is None else config.mixup
        model = keras.models.load_model(run / "last.keras")
        initial_epoch, elapsed = state["epochs_done"], state["elapsed_s"]
        best = state["best"] if "best" in state else state["best_val_loss"]
        print(
            f"resuming after epoch {initial_epoch} "
            f"({elapsed:.0f}s done, best {opts.monitor} {best:.4f})"
        )
    print(
        f"{arch.name}: {len(train_split)} train / {len(val_split)} validation images, "
        f"{epochs} epochs, batch {batch}, peak learning rate {peak_lr:g}, mixup {mixup:g}, "
        f"data {fingerprint}"
    )

    recorded = config.options  # a resumed run keeps the teacher it started with
    augment = replace(augment, one_resampling=augment.one_resampling or recorded.one_resampling)
    if tf_data:
        trainer, fit_data = (
            model,
            _tf_data(
                run,
                config,
                train_split,
                val_split,
                batch,
                augment,
                weights,
                mixup,
                state is not None,
            ),
        )
    else:
        unsupported = [
            f
            for f, on in (
                ("--resume", state),
                ("--teacher", recorded.teacher),
                ("--mixup", mixup),
            )
            if on
        ]
        if unsupported:
            raise RuntimeError(f"{', '.join(unsupported)} need the TensorFlow backend")
        from training.ingraph import arrays, training_view

        trainer = training_view(model, arch.input, augment, opts.seed)
        x, target, sample_weight = arrays(
            train_split, class_weights=weights, label_smoothing=recipe.label_smoothing
        )
        x_val, target_val, _ = arrays(val_split)
        fit_data = {
            "x": x,
            "y": target,
            "sample_weight": sample_weight,
            "batch_size": batch,
            "validation_data": (x_val, target_val),
            "shuffle": True,
        }
    if state is None or not tf_data:
        trainer.compile(
            optimizer=_optimizer(optimizer, peak_lr, recipe.weight_decay),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
    steps = math.ceil(len(train_split) / batch)
    checkpoint = SaveBest(
        model,
        run / "best.keras",
        monitor=opts.monitor,
        mode="min" if opts.monitor == "val_loss" else "max",
        save_best_only=True,
        initial_value_threshold=best,
    )
    callbacks: list[keras.callbacks.Callback] = [
        ProgressSchedule(
            peak_lr,
            epochs * steps,
            2 * steps if optimizer.endswith("cosine") else 0,
            opts.time_budget_s,
            elapsed,
            cosine=optimizer.endswith("cosine"),
        ),
        keras.callbacks.CSVLogger(str(run / "history.csv"), append=initial_epoch > 0),
        checkpoint,
        RunState(run, checkpoint, elapsed, model),
    ]
    if opts.time_budget_s:
        callbacks.append(TimeBudget(opts.time_budget_s, elapsed))
    if initial_epoch < epochs:
        trainer.fit(
            **fit_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=2,
        )
    print(f"done: best checkpoint ({opts.monitor}) {run / 'best.keras'}")
    return run


def _tf_data(run, config, train_split, val_split, batch, augment, weights, mixup, resuming) -> dict:
    """`fit` arguments for TensorFlow: tf.data pipelines that augment and prepare the faces."""
    from training.pipeline import make_dataset

    recipe, options, teacher = architectures.get(config.model).recipe, config.options, None
    if options.teacher:
        from training.distill import run_teacher_targets

        teacher = run_teacher_targets(run, config, train_split, resuming=resuming)
        agree = float((teacher.argmax(1) == train_split.y).mean())
        print(f"teacher agrees with {agree:.1%} of the training labels")
    train_ds = make_dataset(
        train_split,
        architectures.get(config.model).input,
        batch,
        training=True,
        augment=augment,
        class_weights=weights,
        label_smoothing=recipe.label_smoothing,
        teacher=teacher,
        teacher_weight=options.teacher_weight,
        seed=options.seed,
        mixup=mixup,
    )
    val_ds = make_dataset(val_split, architectures.get(config.model).input, batch, training=False)
    # make_dataset shuffles; Keras would only warn that it cannot
    return {"x": train_ds, "validation_data": val_ds, "shuffle": False}

"""The graph that is evaluated and exported: float32 weights, ensemble members, mirror TTA,
temperature.

Evaluation and export build the very same graph, so the metrics recorded in the registry
describe exactly the model the service runs.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import keras
from keras import layers, ops

from app.registry import sha256_file
from training import architectures
from training.architectures import Architecture


def load_best_weights(model: keras.Model, run: str | Path) -> None:
    """Copy a run's best checkpoint into `model`, a build of the same architecture."""
    path = Path(run) / "best.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: that run has not finished an epoch")
    trained = keras.models.load_model(path)
    model.set_weights(trained.get_weights())


def load_float32(run: Path, arch: Architecture) -> keras.Model:
    """The run's best weights in a float32 copy of the architecture (training may use bf16)."""
    keras.mixed_precision.set_global_policy("float32")
    model = arch.build(None)  # the trained weights replace whatever it starts with
    load_best_weights(model, run)
    return model


def member_architectures(config: dict) -> list[Architecture]:
    """The architecture of each member of an ensemble folder, or the run's own."""
    names = config.get("member_models") or [config["model"]] * len(config.get("members") or [1])
    return [architectures.get(name) for name in names]


def architecture_name(config: dict) -> str:
    """`emonet` for a run or an ensemble of emonets, `emonet_deep+emonet` for a mixed one."""
    return "+".join(dict.fromkeys(a.name for a in member_architectures(config)))


def load_members(run: Path, config: dict) -> list[keras.Model]:
    """The run's model, or every member's for an ensemble folder (see `training.ensemble`)."""
    members = [Path(m) for m in config.get("members", [])] or [run]
    archs = member_architectures(config)
    return [load_float32(m, arch) for m, arch in zip(members, archs, strict=True)]


def checkpoint_digest(run: Path, config: dict) -> str:
    """SHA-256 over the best checkpoint of the run or of every ensemble member, in order.

    `evaluate` records it and `export` compares it, so a run trained further (or an ensemble
    folder rewritten) after its evaluation cannot ship the old metrics and temperature.
    """
    digest = hashlib.sha256()
    for member in [Path(m) for m in config.get("members", [])] or [Path(run)]:
        digest.update(sha256_file(member / "best.keras").encode())
    return digest.hexdigest()


def prior_correction(config: dict) -> list[float] | None:
    """`-log(class weight)` per class for a run (or ensemble) trained with class weights.

    Class weights make the network predict as if rare classes were more frequent: they
    multiply the training prior by the weights. Adding `-log(weight)` to the logits divides
    that back out (logit adjustment), so the scores follow the real class prior again while
    training still gets the rare classes' larger gradients. Nothing is fitted.
    """
    weights = config.get("class_weights")
    if not weights:
        return None
    return [-math.log(weights[str(i)]) for i in range(len(weights))]


def serving_model(
    models: list[keras.Model],
    temperature: float = 1.0,
    tta: bool = False,
    log_prior_shift: list[float] | None = None,
) -> keras.Model:
    """softmax((mean logits + shift) / T) over the members, each optionally also mirrored.

    Averaging logits (not probabilities) keeps one temperature meaningful for the whole.
    Mirror test-time augmentation is folded into the graph so the service gets it for free:
    faces are left-right symmetric in meaning, so averaging both views reduces variance.
    `log_prior_shift` is `prior_correction`'s per-class constant.
    """
    x = keras.Input(models[0].input.shape[1:], name="input")
    views = [x]
    if tta:
        views.append(layers.Lambda(lambda t: ops.flip(t, axis=2), name="mirror")(x))
    all_logits = []
    for i, model in enumerate(models):
        name = "logits_of" if len(models) == 1 else f"logits_of_{i}"
        logits_of = keras.Model(model.input, model.get_layer("logits").output, name=name)
        all_logits += [logits_of(v) for v in views]
    logits = all_logits[0]
    if len(all_logits) > 1:
        logits = layers.Average(name="logit_mean")(all_logits)
    if log_prior_shift is not None:
        shift = ops.convert_to_tensor([log_prior_shift], dtype="float32")
        logits = layers.Lambda(lambda t: t + shift, name="prior_correction")(logits)
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    probs = layers.Softmax(name="probabilities_calibrated")(scaled)
    return keras.Model(x, probs, name=f"{models[0].name}_serving")

"""The graph that is evaluated and exported: float32 weights, optional mirror TTA, temperature.

Evaluation and export build the very same graph, so the metrics recorded in the registry
describe exactly the model the service runs.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from training.architectures import Architecture


def load_float32(run: Path, arch: Architecture) -> keras.Model:
    """The run's best weights in a float32 copy of the architecture (training may use bf16)."""
    keras.mixed_precision.set_global_policy("float32")
    trained = keras.models.load_model(run / "best.keras")
    model = arch.build(None)  # the trained weights replace whatever it starts with
    model.set_weights(trained.get_weights())
    return model


def serving_model(model: keras.Model, temperature: float = 1.0, tta: bool = False) -> keras.Model:
    """softmax(logits / T), the logits optionally averaged with those of the mirrored face.

    Mirror test-time augmentation is folded into the graph so the service gets it for free:
    faces are left-right symmetric in meaning, so averaging both views reduces variance.
    """
    logits_of = keras.Model(model.input, model.get_layer("logits").output, name="logits_of")
    x = keras.Input(model.input.shape[1:], name="input")
    logits = logits_of(x)
    if tta:
        mirrored = layers.Lambda(lambda t: ops.flip(t, axis=2), name="mirror")(x)
        logits = layers.Average(name="tta_mean")([logits, logits_of(mirrored)])
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    probs = layers.Softmax(name="probabilities_calibrated")(scaled)
    return keras.Model(x, probs, name=f"{model.name}_serving")

"""The architecture registry: each trainable model by name, with its input and training recipe.

Adding a model is one builder function decorated with `@register(...)` (the project's models
in training.architectures, the study's in training.study_architectures; import
training.architectures, which registers both, to look one up). Every model ends
in a linear `logits` layer followed by a float32 softmax, so export can fold a fitted
temperature in front of the softmax without touching the trained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
from keras import layers

from app.labels import EMOTIONS
from app.preprocess import InputSpec
from training.augment import NONE, AugmentConfig

N_CLASSES = len(EMOTIONS)


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained by default; command-line flags override the counts."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"  # "adam" (constant lr) or "sgd_cosine" (Nesterov, warm-up + cosine)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    class_weight_power: float = 1.0
    augment: AugmentConfig = NONE
    mixup: float = 0.0  # Beta alpha of mixup between faces of a batch; 0 = off


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    input: InputSpec
    recipe: Recipe
    builder: Callable[[str | None], keras.Model] = field(repr=False)

    def build(self, weights: str | None = None) -> keras.Model:
        """Build the model; `weights` is "imagenet", a local weights file, or None."""
        return self.builder(weights)


ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, description: str, input: InputSpec, recipe: Recipe):
    def deco(fn: Callable[[str | None], keras.Model]) -> Callable[[str | None], keras.Model]:
        ARCHITECTURES[name] = Architecture(name, description, input, recipe, fn)
        return fn

    return deco


def get(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def classifier_output(x, name: str, inputs) -> keras.Model:
    logits = layers.Dense(N_CLASSES, name="logits")(x)
    probs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probs, name=name)


GRAY48 = InputSpec(48, 48, 1, color="gray", normalization="unit", source_size=48)

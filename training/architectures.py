"""Every trainable architecture, registered by name with its input and training recipe.

Adding a model is one builder function decorated with `@register(...)`. Every model ends
in a linear `logits` layer followed by a float32 softmax, so export can fold a fitted
temperature in front of the softmax without touching the trained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
from keras import layers

from app.labels import EMOTIONS
from app.preprocess import InputSpec
from training.augment import NONE, STANDARD, STUDY, AugmentConfig

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


def _classifier_output(x, name: str, inputs) -> keras.Model:
    logits = layers.Dense(N_CLASSES, name="logits")(x)
    probs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probs, name=name)


GRAY48 = InputSpec(48, 48, 1, color="gray", normalization="unit", source_size=48)


def _study_cnn(name: str) -> keras.Model:
    """The study's from-scratch CNN (17,046,535 parameters)."""
    inputs = keras.Input((48, 48, 1))
    x = inputs
    for filters_a, filters_b, pad_b in ((32, 64, "same"), (128, 256, "valid"), (512, 512, "same")):
        x = layers.Conv2D(filters_a, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters_b, 3, padding=pad_b, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return _classifier_output(x, name, inputs)


# Adam at 1e-4: at Keras' default 1e-3 the 13 M-weight Dense layer after Flatten takes steps
# too large for its fan-in; measured here on the full data, after 6 epochs train/validation
# accuracy was 24.7%/31.2% at 1e-3 against 41.1%/41.2% at 1e-4.
STUDY_RECIPE = Recipe(learning_rate=1e-4)


@register("cnn_scratch", "study model 1: CNN from scratch, no augmentation", GRAY48, STUDY_RECIPE)
def cnn_scratch(weights: str | None = None) -> keras.Model:
    return _study_cnn("cnn_scratch")


@register(
    "cnn_augmented",
    "study model 2: the same CNN with on-the-fly augmentation",
    GRAY48,
    Recipe(learning_rate=STUDY_RECIPE.learning_rate, augment=STUDY),
)
def cnn_augmented(weights: str | None = None) -> keras.Model:
    return _study_cnn("cnn_augmented")


def _imagenet_weights(weights: str | None) -> str | None:
    """Keras' `weights` argument: None, "imagenet" (downloaded) or a local weights file."""
    if weights in (None, "none"):
        return None
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    return weights


def _transfer_base(app_fn, weights: str | None) -> keras.Model:
    try:
        return app_fn(
            include_top=False, weights=_imagenet_weights(weights), input_shape=(224, 224, 3)
        )
    except Exception as exc:  # download failures surface as several exception types
        if weights != "imagenet":
            raise
        raise RuntimeError(
            "ImageNet weights could not be downloaded; pass --weights PATH to a local "
            "weights file (notop .h5) or --weights none"
        ) from exc


@register(
    "vgg16",
    "study model 3: VGG16 transfer (frozen to block5_conv1) on 224x224x3",
    InputSpec(224, 224, 3, color="gray", normalization="caffe", source_size=48),
    Recipe(batch_size=32, learning_rate=1e-4),
)
def vgg16(weights: str | None = "imagenet") -> keras.Model:
    base = _transfer_base(keras.applications.VGG16, weights)
    trainable = False
    for layer in base.layers:
        layer.trainable = trainable
        if layer.name == "block5_conv1":
            trainable = True
    x = layers.Flatten()(base.output)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return _classifier_output(x, "vgg16", base.input)


@register(
    "resnet50v2",
    "study model 4 (the study's pick): ResNet50V2 transfer, last 50 layers trainable, 224x224x3",
    InputSpec(224, 224, 3, color="gray", normalization="tf", source_size=48),
    Recipe(epochs=45, batch_size=32, learning_rate=1e-4),
)
def resnet50v2(weights: str | None = "imagenet") -> keras.Model:
    base = _transfer_base(keras.applications.ResNet50V2, weights)
    for layer in base.layers[:-50]:
        layer.trainable = False
    x = layers.Dropout(0.5)(base.output)
    x = layers.BatchNormalization()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.5)(x)
    return _classifier_output(x, "resnet50v2", base.input)


EMONET_RECIPE = Recipe(
    epochs=40,
    batch_size=64,
    optimizer="sgd_cosine",
    learning_rate=0.05,
    weight_decay=5e-4,
    label_smoothing=0.1,
    class_weight_power=0.5,
    augment=STANDARD,
)


def _conv_bn(x, filters: int, relu: bool = True):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def _vgg_bn(name: str, stages: tuple[tuple[int, int], ...]) -> keras.Model:
    """3x3 conv + batch norm + ReLU stacks, `(filters, convs)` per stage, each ending in a 2x2
    max-pool, then a 256-unit dense head; dropout after the 12x12 and 6x6 stages and in the head.
    """
    inputs = keras.Input((48, 48, 1))
    x = inputs
    for i, (filters, convs) in enumerate(stages):
        for _ in range(convs):
            x = _conv_bn(x, filters)
        x = layers.MaxPooling2D()(x)
        if i >= 2:
            x = layers.Dropout(0.2)(x)
    return _dense_head(layers.Flatten()(x), 0.5, name, inputs)


def _dense_head(x, dropout: float, name: str, inputs) -> keras.Model:
    """Dropout, a 256-unit dense layer with batch norm, dropout again, then the logits."""
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(256, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.5)(x)
    return _classifier_output(x, name, inputs)


@register(
    "emonet",
    "compact VGG-style CNN with batch norm, 48x48x1, ~1.8 M parameters",
    GRAY48,
    EMONET_RECIPE,
)
def emonet(weights: str | None = None) -> keras.Model:
    return _vgg_bn("emonet", ((32, 2), (64, 2), (128, 2), (256, 2)))


# The 48x48 stage's second conv (32 channels) is the slowest per FLOP in int8 onnxruntime;
# moving that compute into a third conv at 12x12 and at 6x6 gives a deeper network with a
# larger receptive field at the same served latency (measured: a random-weight int8 pair runs
# at 0.83 / 0.73 ms per face at batch 1 / 32, emonet's pair at 0.76 / 0.72).
@register(
    "emonet_deep",
    "VGG-style CNN with batch norm, 48x48x1, one conv at 48x48 and three at 12x12 and 6x6, "
    "~2.5 M parameters",
    GRAY48,
    EMONET_RECIPE,
)
def emonet_deep(weights: str | None = None) -> keras.Model:
    return _vgg_bn("emonet_deep", ((32, 1), (64, 2), (128, 3), (256, 3)))


def _residual(x, filters: int):
    """Two 3x3 convs that learn a correction to their input, added back before the ReLU."""
    y = _conv_bn(_conv_bn(x, filters), filters, relu=False)
    return layers.ReLU()(layers.Add()([x, y]))


# A third member for the ensembles needs a different inductive bias more than more cycles: two
# cycles of one architecture agree on 88.5-98.6% of validation faces, emonet and emonet_deep on
# 71.9%. This one has identity shortcuts at 12x12 and 6x6 and a global-average-pooled head (no
# spatial flatten), at emonet_deep's ~139 M multiply-adds, so it costs the same to serve.
@register(
    "emonet_res",
    "residual CNN with batch norm and a global-average-pooled head, 48x48x1, ~2.0 M parameters",
    GRAY48,
    EMONET_RECIPE,
)
def emonet_res(weights: str | None = None) -> keras.Model:
    inputs = keras.Input((48, 48, 1))
    x = layers.MaxPooling2D()(_conv_bn(inputs, 32))
    x = layers.MaxPooling2D()(_conv_bn(_conv_bn(x, 64), 64))
    x = layers.MaxPooling2D()(_residual(_conv_bn(x, 128), 128))
    x = layers.Dropout(0.2)(x)
    x = _residual(_conv_bn(x, 256), 256)
    return _dense_head(layers.GlobalAveragePooling2D()(x), 0.3, "emonet_res", inputs)

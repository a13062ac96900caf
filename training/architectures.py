"""The project's architectures (the emonet family), and the lookup every command uses.

The registry itself is training.arch_registry; importing this module registers the study's
four models (training.study_architectures) first, then the project's, so `get` and
`ARCHITECTURES` see all of them in the order `python -m training models` lists them.
"""

from __future__ import annotations

import keras
from keras import layers

from training import study_architectures  # noqa: F401  (registers the study's models first)
from training.arch_registry import (  # noqa: F401  (the lookup, re-exported for every command)
    ARCHITECTURES,
    GRAY48,
    N_CLASSES,
    Architecture,
    Recipe,
    classifier_output,
    get,
    register,
)
from training.augment import STANDARD

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
    return classifier_output(x, name, inputs)


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
# larger receptive field at about the same served latency (figures: docs/training.md).
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
# cycles of one architecture agree far more often than emonet and emonet_deep do (figures:
# docs/training.md). This one has identity shortcuts at 12x12 and 6x6 and a global-average-
# pooled head (no spatial flatten), at emonet_deep's multiply-adds, so it costs the same to serve.
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

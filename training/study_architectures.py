"""The study's four architectures: its CNN from scratch, the same CNN with augmentation, and
the VGG16 and ResNet50V2 transfer models. The project's own (the emonet family) are in
training.architectures, which registers these too; `--model` names are unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
from keras import layers

from app.preprocess import InputSpec
from training.arch_registry import GRAY48, Recipe, classifier_output, register
from training.augment import STUDY


def _study_cnn(name: str) -> keras.Model:
    """The study's from-scratch CNN (`python -m training models` counts its parameters)."""
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
    return classifier_output(x, name, inputs)


# Adam at 1e-4: at Keras' default 1e-3 the large Dense layer after Flatten takes steps too large
# for its fan-in and trains badly. Batch 32 (Keras' flow_from_directory default) and no class
# weights: the study reports plain accuracy after 10 epochs, and batches of 64 with
# inverse-frequency weights left this network far from it (figures: docs/training.md).
STUDY_RECIPE = Recipe(batch_size=32, learning_rate=1e-4, class_weight_power=0.0)


@register("cnn_scratch", "study model 1: CNN from scratch, no augmentation", GRAY48, STUDY_RECIPE)
def cnn_scratch(weights: str | None = None) -> keras.Model:
    return _study_cnn("cnn_scratch")


@register(
    "cnn_augmented",
    "study model 2: the same CNN with on-the-fly augmentation",
    GRAY48,
    replace(STUDY_RECIPE, augment=STUDY),
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
    return classifier_output(x, "vgg16", base.input)


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
    return classifier_output(x, "resnet50v2", base.input)

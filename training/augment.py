"""On-the-fly image augmentation for batches of 48x48 faces, run inside tf.data.

Augmentation happens on pixel values in [0, 255] before the model's normalization, so
the same `app.preprocess` code prepares training batches and served faces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Which random transforms to apply; zero/False switches one off."""

    flip: bool = False
    rotation_deg: float = 0.0
    shift: float = 0.0  # fraction of height/width
    zoom: float = 0.0  # fraction
    shear: float = 0.0  # keras RandomShear factor
    erasing: float = 0.0  # probability of erasing one random rectangle

    @property
    def active(self) -> bool:
        return any(asdict(self).values())


NONE = AugmentConfig()
# The study's ImageDataGenerator settings: rotation, shifts, zoom, shear, horizontal flip.
STUDY = AugmentConfig(flip=True, rotation_deg=10, shift=0.1, zoom=0.1, shear=0.1)


def build_augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential | None:
    """A stack of Keras random layers implementing `cfg`, or None when nothing is on."""
    if not cfg.active:
        return None
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation_deg:
        layers.append(
            keras.layers.RandomRotation(
                cfg.rotation_deg / 360.0, fill_mode="nearest", seed=seed + 1
            )
        )
    if cfg.shear:
        layers.append(
            keras.layers.RandomShear(x_factor=cfg.shear, fill_mode="nearest", seed=seed + 2)
        )
    if cfg.shift:
        layers.append(
            keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="nearest", seed=seed + 3)
        )
    if cfg.zoom:
        layers.append(
            keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="nearest", seed=seed + 4)
        )
    if cfg.erasing:
        layers.append(
            keras.layers.RandomErasing(
                factor=cfg.erasing, scale=(0.02, 0.2), value_range=(0, 255), seed=seed + 5
            )
        )
    return keras.Sequential(layers, name="augment")


def augment_fn(cfg: AugmentConfig, seed: int):
    """A tf.data map function `(x, y) -> (x', y)` for batches of float images."""
    aug = build_augmenter(cfg, seed)
    if aug is None:
        return None

    def fn(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y

    return fn

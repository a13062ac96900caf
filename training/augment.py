"""On-the-fly image augmentation for batches of 48x48 faces.

Augmentation happens on pixel values in [0, 255] before the model's normalization, so
the same `app.preprocess` code prepares training batches and served faces. The Keras random
layers run on any backend: inside tf.data under TensorFlow, inside the training graph under
PyTorch or JAX (see `training.ingraph`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras


@dataclass(frozen=True)
class AugmentConfig:
    """Which random transforms to apply; zero/False switches one off."""

    flip: bool = False
    rotation_deg: float = 0.0
    shift: float = 0.0  # fraction of height/width
    zoom: float = 0.0  # fraction
    shear: float = 0.0  # keras RandomShear factor
    erasing: float = 0.0  # probability of erasing one random rectangle
    # Rotation, shear, shift and zoom as one affine map, so a face is resampled once. Each
    # bilinear resampling at a random sub-pixel offset blurs (1/6 px^2 of variance): one
    # Keras layer per transform blurs training faces by a Gaussian of about 0.7 px.
    one_resampling: bool = False

    @property
    def active(self) -> bool:
        return any(v for k, v in asdict(self).items() if k != "one_resampling")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation_deg or self.shear or self.shift or self.zoom)


class RandomAffine(keras.layers.Layer):
    """Random rotation, shear, shift and zoom of each image, composed into one affine map and
    applied with one bilinear resampling (nearest-pixel fill), in the ranges Keras' separate
    layers use: rotation in degrees, shear as a factor, shift and zoom as fractions."""

    def __init__(self, cfg: AugmentConfig, **kwargs):
        # float32 whatever the global policy: under mixed_bfloat16 the faces would be
        # rounded to 8 significant bits
        super().__init__(dtype="float32", **kwargs)
        self.cfg = cfg

    def call(self, images, training=True):
        import tensorflow as tf  # TensorFlow backend only: fit refuses the option elsewhere

        if not training:
            return images
        n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]

        def draw(bound: float):
            return tf.random.uniform([n], -bound, bound)

        angle, shear = draw(self.cfg.rotation_deg * math.pi / 180.0), draw(self.cfg.shear)
        scale = 1.0 + draw(self.cfg.zoom)  # above 1 the face looks smaller (zoomed out)
        dx, dy = draw(self.cfg.shift * w), draw(self.cfg.shift * h)
        # output pixel p -> input pixel M (p - c) + c + shift, about the image centre c
        cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
        a0, a1, b0, b1 = cos, cos * shear - sin, sin, sin * shear + cos
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        a2, b2 = cx - a0 * cx - a1 * cy + dx, cy - b0 * cx - b1 * cy + dy
        zero = tf.zeros_like(a0)
        transform = tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
        return keras.ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="nearest"
        )


NONE = AugmentConfig()
# The study's ImageDataGenerator settings: rotation, shifts, zoom, shear, horizontal flip.
STUDY = AugmentConfig(flip=True, rotation_deg=10, shift=0.1, zoom=0.1, shear=0.1)
# The project's own recipe: the study's transforms without shear, plus random erasing.
STANDARD = AugmentConfig(flip=True, rotation_deg=10, shift=0.1, zoom=0.1, erasing=0.5)
PRESETS = {"none": NONE, "study": STUDY, "standard": STANDARD}


def build_augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential | None:
    """A stack of Keras random layers implementing `cfg`, or None when nothing is on."""
    if not cfg.active:
        return None
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.one_resampling and cfg.geometric:
        layers.append(RandomAffine(cfg))
        cfg = AugmentConfig(erasing=cfg.erasing)  # the separate layers below stay off
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

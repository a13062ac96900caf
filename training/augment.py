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
    # What photos do to a face before the service sees it: lighting, contrast and gamma,
    # sensor noise, blur, downscaling from a smaller face, JPEG artefacts (`PhotoLook`).
    photo: bool = False
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


class PhotoLook(keras.layers.Layer):
    """Random photo degradations of gray faces in [0, 255], each image drawing its own.

    Downscaling (a face that was 12-32 px wide in the photo) and Gaussian blur pick one of a
    few strengths per image; then brightness, contrast and gamma; sensor noise; and JPEG
    re-encoding at a random quality. TensorFlow backend only (JPEG coding is TensorFlow's);
    draws come from TensorFlow's global generator, which the trainer's seed fixes.
    """

    SIZES = (12, 16, 24, 32)
    SIGMAS = (0.6, 1.0, 1.6)

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **kwargs)

    def call(self, images, training=True):
        import tensorflow as tf

        if not training:
            return images
        n, size = tf.shape(images)[0], images.shape[1]

        def chosen(variants: list, p: float):
            """Per image: with probability p one of `variants` (drawn uniformly), else itself."""
            pick = tf.random.uniform([n], 0, len(variants), dtype=tf.int32)
            use = tf.random.uniform([n]) < p
            out = images
            for i, v in enumerate(variants):
                mask = tf.reshape(tf.logical_and(use, tf.equal(pick, i)), [-1, 1, 1, 1])
                out = tf.where(mask, v, out)
            return out

        small = [
            tf.image.resize(tf.image.resize(images, (s, s), antialias=True), (size, size))
            for s in self.SIZES
        ]
        images = chosen(small, 0.3)
        images = chosen([_gaussian_blur(images, s) for s in self.SIGMAS], 0.3)

        def draw(low: float, high: float):
            return tf.random.uniform([n, 1, 1, 1], low, high)

        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        x = (images - mean) * draw(0.6, 1.4) + mean + draw(-30.0, 30.0)
        x = 255.0 * (tf.clip_by_value(x, 0.0, 255.0) / 255.0) ** tf.exp(draw(-0.4, 0.4))
        x = x + tf.random.normal(tf.shape(x)) * draw(0.0, 6.0)
        x = tf.clip_by_value(x, 0.0, 255.0)
        jpeg = tf.map_fn(
            lambda im: tf.cast(
                tf.image.adjust_jpeg_quality(
                    tf.cast(tf.round(im), tf.uint8),
                    tf.random.uniform([], 25, 95, dtype=tf.int32),
                ),
                tf.float32,
            ),
            x,
        )
        use = tf.reshape(tf.random.uniform([n]) < 0.5, [-1, 1, 1, 1])
        return tf.where(use, jpeg, x)


def _gaussian_blur(images, sigma: float):
    """Gaussian blur of a (N, H, W, 1) batch, edges replicated.

    Weighted sums of shifted views rather than `tf.nn.conv2d`, which is many times slower on
    one-channel images on CPU.
    """
    import numpy as np
    import tensorflow as tf

    radius = int(math.ceil(2.5 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    height, width = images.shape[1], images.shape[2]
    x = tf.pad(images, [[0, 0], [radius, radius], [0, 0], [0, 0]], "SYMMETRIC")
    x = tf.add_n([float(t) * x[:, i : i + height] for i, t in enumerate(taps)])
    x = tf.pad(x, [[0, 0], [0, 0], [radius, radius], [0, 0]], "SYMMETRIC")
    return tf.add_n([float(t) * x[:, :, i : i + width] for i, t in enumerate(taps)])


NONE = AugmentConfig()
# The study's ImageDataGenerator settings: rotation, shifts, zoom, horizontal flip, drawn as one
# affine map per face. Its shear is left out: ImageDataGenerator reads `shear_range` in
# degrees, so a shear of the usual 0.1-0.2 moves a 48 px face by less than 0.1 px, where a
# 0.1 shear factor here tilts it by up to 5.7 degrees on top of the rotation.
STUDY = AugmentConfig(flip=True, rotation_deg=10, shift=0.1, zoom=0.1, one_resampling=True)
# The project's own recipe: the study's transforms without shear, plus random erasing.
STANDARD = AugmentConfig(flip=True, rotation_deg=10, shift=0.1, zoom=0.1, erasing=0.5)
# For faces found in photos: a little more pose (rotation, shear), the photo degradations of
# `PhotoLook`, and erasing as partial occlusion.
PHOTO = AugmentConfig(
    flip=True, rotation_deg=15, shift=0.08, zoom=0.12, shear=0.1, erasing=0.5, photo=True
)
PRESETS = {"none": NONE, "study": STUDY, "standard": STANDARD, "photo": PHOTO}


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
    if cfg.photo:
        layers.append(PhotoLook())
    if cfg.erasing:
        layers.append(
            keras.layers.RandomErasing(
                factor=cfg.erasing, scale=(0.02, 0.2), value_range=(0, 255), seed=seed + 5
            )
        )
    return keras.Sequential(layers, name="augment")

"""Training input inside the model, for Keras backends without tf.data (PyTorch, JAX).

Under TensorFlow, `training.pipeline` augments and prepares batches in tf.data. On other
backends the same Keras augmentation layers and the `app.preprocess` numbers run as the first
layers of a *training view* of the model, so batches travel to the accelerator as small
48x48 faces and become the model's input there (a 224x224x3 batch is 65 times larger).
The view adds no weights: checkpoints hold the model alone, as under TensorFlow.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from app.labels import EMOTIONS
from app.preprocess import InputSpec, normalization
from training.augment import AugmentConfig, build_augmenter
from training.data import FACE_SIZE, Split


class PrepareFaces(keras.layers.Layer):
    """48x48x1 faces in [0, 255] to the model's input, as `app.preprocess.prepare_face` does.

    Faces only grow here (every registered input is at least 48x48), where the service's
    OpenCV resize is bilinear with half-pixel centres, as `ops.image.resize` is.
    """

    def __init__(self, spec: InputSpec, **kwargs):
        super().__init__(dtype="float32", **kwargs)  # faces keep their precision under bf16
        if min(spec.height, spec.width, spec.source_size or FACE_SIZE) < FACE_SIZE:
            raise ValueError(f"{spec} would shrink the faces; train it with TensorFlow")
        self.spec = spec
        divisor, offset, self.to_bgr = normalization(spec.normalization, spec.channels)
        self.divisor, self.offset = divisor, [float(v) for v in offset]

    def call(self, x):
        spec = self.spec
        x = ops.clip(x, 0.0, 255.0)  # augmentation may overshoot; served pixels never do
        sizes = [(spec.height, spec.width)]
        if spec.source_size and spec.source_size != spec.height:
            sizes.insert(0, (spec.source_size, spec.source_size))
        for size in sizes:
            if tuple(x.shape[1:3]) != size:
                x = ops.image.resize(x, size, interpolation="bilinear", antialias=False)
        if spec.channels == 3:
            x = ops.repeat(x, 3, axis=-1)
        if self.to_bgr:
            x = ops.flip(x, axis=-1)
        return x / self.divisor + ops.convert_to_tensor(np.asarray(self.offset, np.float32))


def training_view(
    model: keras.Model, spec: InputSpec, augment: AugmentConfig, seed: int
) -> keras.Model:
    """`model` behind augmentation (training only) and preparation, taking 48x48x1 faces."""
    if augment.one_resampling and augment.geometric:
        raise ValueError("--one-resampling needs the TensorFlow backend")
    if augment.photo:
        raise ValueError("--augment photo needs the TensorFlow backend (JPEG coding)")
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # augmented faces stay float32
    try:
        inputs = keras.Input((FACE_SIZE, FACE_SIZE, 1), name="faces")
        aug = build_augmenter(augment, seed)
        x = inputs if aug is None else aug(inputs)
        x = PrepareFaces(spec, name="prepare")(x)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return keras.Model(inputs, model(x), name=f"{model.name}_training_view")


def arrays(
    split: Split,
    *,
    class_weights: dict[int, float] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces (N, 48, 48, 1) float32, targets (one-hot, smoothed) and per-face weights."""
    n_classes = len(EMOTIONS)
    target = np.eye(n_classes, dtype=np.float32)[split.y]
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
    table = np.ones(n_classes, np.float32)
    if class_weights:
        table = np.asarray([class_weights[i] for i in range(n_classes)], np.float32)
    return split.x[..., None].astype(np.float32), target, table[split.y]

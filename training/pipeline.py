"""tf.data pipelines: batch -> augment -> prepare for the model's input (shared code) -> weight -> mix."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.labels import EMOTIONS
from app.preprocess import InputSpec, normalize, prepare_batch
from training.augment import NONE, AugmentConfig, build_augmenter
from training.data import Split


def needs_resize(spec: InputSpec) -> bool:
    return (spec.height, spec.width, spec.channels) != (48, 48, 1)


def prepare_tf(x: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    """Apply `app.preprocess` to a float batch of 48x48x1 faces inside the graph.

    Same-size gray models only need `normalize`, which runs on tensors directly; models
    with another input size go through the NumPy `prepare_batch` the service uses.
    """
    if not needs_resize(spec):
        return tf.cast(normalize(x, spec.normalization), tf.float32)
    out = tf.numpy_function(lambda b: prepare_batch(b, spec), [x], tf.float32, stateful=False)
    return tf.ensure_shape(out, (None, spec.height, spec.width, spec.channels))


def augment_fn(cfg: AugmentConfig, seed: int):
    """A tf.data map function `(x, y) -> (x', y)` for batches of float images."""
    aug = build_augmenter(cfg, seed)
    if aug is None:
        return None

    def fn(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y

    return fn


def make_dataset(
    split: Split,
    spec: InputSpec,
    batch_size: int,
    *,
    training: bool,
    augment: AugmentConfig = NONE,
    class_weights: dict[int, float] | None = None,
    label_smoothing: float = 0.0,
    teacher: np.ndarray | None = None,
    teacher_weight: float = 0.0,
    seed: int = 0,
    mixup: float = 0.0,
) -> tf.data.Dataset:
    """Batches of (input, target, sample weight) for training, or (input, one-hot).

    The training target is the (smoothed) one-hot label, mixed with the teacher's
    probabilities for that face when distilling: `(1 - w) * label + w * teacher`.
    With `mixup` > 0 each training face is then blended with another of its batch
    (see `mix_batch`).
    """
    n_classes = len(EMOTIONS)
    weights = np.ones(n_classes, np.float32)
    if class_weights:
        weights = np.asarray([class_weights[i] for i in range(n_classes)], np.float32)
    if teacher is None:
        teacher_weight = 0.0
        teacher = np.zeros((len(split), n_classes), np.float32)  # a placeholder, never mixed in
    ds = tf.data.Dataset.from_tensor_slices((split.x[..., None], (split.y, teacher)))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    aug = augment_fn(augment, seed) if training else None
    if aug is not None:
        ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE)
    w_table = tf.constant(weights)

    def finish(x, labels):
        y, soft = labels
        target = tf.one_hot(y, n_classes)
        if training and label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
        if training and teacher_weight:
            target = (1.0 - teacher_weight) * target + teacher_weight * soft
        x = prepare_tf(x, spec)
        if training:
            return x, target, tf.gather(w_table, y)
        return x, target

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    if training and mixup:
        ds = ds.map(lambda x, t, w: mix_batch(x, t, w, mixup), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def mix_batch(
    x: tf.Tensor, target: tf.Tensor, weight: tf.Tensor, alpha: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mixup: blend each face, target and sample weight with another face of the batch.

    Each face draws its own share `lam ~ Beta(alpha, alpha)`, folded to at least 0.5 so
    the face keeps most of itself; a small `alpha` leaves most faces nearly untouched.
    """
    n = tf.shape(x)[0]
    g1 = tf.random.gamma([n], alpha)
    g2 = tf.random.gamma([n], alpha)
    lam = g1 / tf.maximum(g1 + g2, 1e-12)
    lam = tf.maximum(lam, 1.0 - lam)
    partner = tf.random.shuffle(tf.range(n))

    def blend(t: tf.Tensor) -> tf.Tensor:
        share = tf.reshape(lam, [-1] + [1] * (t.shape.rank - 1))
        return share * t + (1.0 - share) * tf.gather(t, partner)

    return blend(x), blend(target), blend(weight)

"""The graph that is evaluated and exported: float32 weights, ensemble members, mirror TTA,
temperature.

Evaluation and export build the very same graph, so the metrics recorded in the registry
describe exactly the model the service runs.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from app.files import sha256_file
from training import architectures
from training.architectures import N_CLASSES, Architecture
from training.run_config import RunConfig


def load_best_weights(model: keras.Model, run: str | Path) -> None:
    """Copy a run's best checkpoint into `model`, a build of the same architecture."""
    path = Path(run) / "best.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: that run has not finished an epoch")
    trained = keras.models.load_model(path)
    model.set_weights(trained.get_weights())


def load_float32(run: Path, arch: Architecture) -> keras.Model:
    """The run's best weights in a float32 copy of the architecture (training may use bf16)."""
    keras.mixed_precision.set_global_policy("float32")
    model = arch.build(None)  # the trained weights replace whatever it starts with
    load_best_weights(model, run)
    return model


def member_architectures(config: RunConfig | dict) -> list[Architecture]:
    """The architecture of each member of an ensemble folder, or the run's own."""
    config = RunConfig.coerce(config)
    names = config.member_models or [config.model] * len(config.members or [1])
    return [architectures.get(name) for name in names]


def architecture_name(config: RunConfig | dict) -> str:
    """`emonet` for a run or an ensemble of emonets, `emonet_deep+emonet` for a mixed one."""
    return "+".join(dict.fromkeys(a.name for a in member_architectures(config)))


def load_members(run: Path, config: RunConfig | dict) -> list[keras.Model]:
    """The run's model, or every member's for an ensemble folder (see `training.ensemble`)."""
    config = RunConfig.coerce(config)
    members = [Path(m) for m in config.members] or [run]
    archs = member_architectures(config)
    return [load_float32(m, arch) for m, arch in zip(members, archs, strict=True)]


def checkpoint_digest(run: Path, config: RunConfig | dict) -> str:
    """SHA-256 over the best checkpoint of the run or of every ensemble member, in order.

    `evaluate` records it and `export` compares it, so a run trained further (or an ensemble
    folder rewritten) after its evaluation cannot ship the old metrics and temperature.
    """
    digest = hashlib.sha256()
    for member in [Path(m) for m in RunConfig.coerce(config).members] or [Path(run)]:
        digest.update(sha256_file(member / "best.keras").encode())
    return digest.hexdigest()


def prior_correction(config: RunConfig | dict) -> list[float] | None:
    """`-log(class weight)` per class for a run (or ensemble) trained with class weights.

    Class weights make the network predict as if rare classes were more frequent: they
    multiply the training prior by the weights. Adding `-log(weight)` to the logits divides
    that back out (logit adjustment), so the scores follow the real class prior again while
    training still gets the rare classes' larger gradients. Nothing is fitted.
    """
    weights = RunConfig.coerce(config).class_weights
    if not weights:
        return None
    return [-math.log(weights[str(i)]) for i in range(len(weights))]


# How a cascade view looks at the face: as it is, zoomed in (the centre 1/ZOOM of each side,
# scaled back up: 46 of 48 pixels), smoothed, mirrored, or a mix, in that order.
ZOOM = 1.05
# Training faces pass three random affine layers (rotation, shift, zoom), each resampling
# bilinearly at a random sub-pixel offset: each adds 1/6 px^2 of blur variance, so the
# networks learn on faces smoothed by a Gaussian of about sqrt(3/6) px (checked on augmented
# faces' Laplacian energy: docs/model-history.md), while served faces are sharp. The smoothed view gives the networks the faces they learned on.
SMOOTH_SIGMA = 0.7
_VIEW = re.compile(r"(\d+)(z?s?m?)")


@dataclass(frozen=True)
class CascadeSpec:
    """Which views each stage of an early-exit cascade adds, and when a face goes on.

    A view is `(member index, transform)`, written `0`, `0m` (mirrored), `0z` (zoomed in),
    `0s` (smoothed as training smooths faces) or a mix such as `0zm` or `0sm`. Every face
    gets the first stage; a face goes on to the next stage only while the margin between its
    two most likely classes (under the mean logits so far, prior-corrected, at T = 1) is
    below that stage's threshold. Confident faces thus pay for one network while doubtful
    ones get every view.
    """

    stages: tuple[tuple[tuple[int, str], ...], ...]
    margins: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.margins) != len(self.stages) - 1 or not self.stages:
            raise ValueError(f"{len(self.stages)} stages need {len(self.stages) - 1} margins")
        if any(not stage for stage in self.stages):
            raise ValueError("every cascade stage needs at least one view")

    @classmethod
    def parse(cls, stages: str, margins: list[float]) -> CascadeSpec:
        """`"1;0;0m,1m"`: stages split by `;`, views by `,` (see the class docstring)."""
        parsed = []
        for stage in stages.split(";"):
            views = []
            for view in stage.split(","):
                match = _VIEW.fullmatch(view.strip())
                if match is None:
                    raise ValueError(f"{view.strip()!r} is not a view such as 0, 0m, 0z, 0s or 0sm")
                views.append((int(match[1]), match[2]))
            parsed.append(tuple(views))
        return cls(tuple(parsed), tuple(float(m) for m in margins))

    def text(self) -> str:
        return ";".join(",".join(f"{i}{t}" for i, t in st) for st in self.stages)

    def as_dict(self) -> dict:
        return {"stages": self.text(), "margins": list(self.margins)}

    @classmethod
    def from_dict(cls, d: dict | None) -> CascadeSpec | None:
        if d is None:
            return None
        try:
            return cls.parse(d["stages"], d["margins"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(f"not a cascade: {d!r} ({exc})") from exc


def zoom_matrix(size: int) -> np.ndarray:
    """(size, size) bilinear weights taking the centre 1/ZOOM of a row of pixels to `size`.

    The same numbers as cropping and `tf.image.resize` (half-pixel centres), as one constant:
    tf2onnx's optimizer mis-sizes a crop followed by a resize of one-channel faces.
    """
    border = (size - round(size / ZOOM)) // 2
    inner = size - 2 * border
    m = np.zeros((size, size), np.float32)
    for i in range(size):
        src = min(max((i + 0.5) * inner / size - 0.5, 0.0), inner - 1.0)
        lo = int(src)
        hi = min(lo + 1, inner - 1)
        m[i, border + lo] += 1.0 - (src - lo)
        m[i, border + hi] += src - lo
    return m


def smooth_matrix(size: int, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """(size, size) Gaussian weights over a row of pixels, cut at 3 sigma; each row sums to 1,
    so pixels near the border average only the pixels there are."""
    d = np.arange(size)[:, None] - np.arange(size)[None, :]
    m = np.where(np.abs(d) <= 3 * sigma, np.exp(-(d**2) / (2 * sigma**2)), 0.0)
    return (m / m.sum(1, keepdims=True)).astype(np.float32)


def _axis_matrix(size: int, transform: str) -> np.ndarray:
    """The zoom and/or smoothing of `transform` along one axis, as one matrix."""
    m = zoom_matrix(size) if "z" in transform else np.eye(size, dtype=np.float32)
    return smooth_matrix(size) @ m if "s" in transform else m


def transform_faces(x, transform: str):
    """The faces `x` (NHWC) as view `transform` sees them (`CascadeSpec`)."""
    if "z" in transform or "s" in transform:  # rows, then columns: two Einsum nodes
        x = tf.einsum("ij,njwc->niwc", _axis_matrix(x.shape[1], transform), x)
        x = tf.einsum("ij,nhjc->nhic", _axis_matrix(x.shape[2], transform), x)
    if "m" in transform:  # a Gather of the columns in reverse: one ONNX node
        x = tf.gather(x, list(range(x.shape[2] - 1, -1, -1)), axis=2)
    return x


def top2_margin(logits):
    """Probability of the most likely class minus that of the runner-up."""
    top = ops.top_k(ops.softmax(logits, axis=-1), 2)[0]
    return top[:, 0] - top[:, 1]


class Cascade(layers.Layer):
    """Mean logits of a `CascadeSpec`'s views, later stages counting only for doubtful faces.

    With `skip_confident` (the exported graph) faces that go on are gathered into a smaller
    batch and their updated means scattered back, so a batch costs what its faces need (ONNX
    NonZero/Gather/ScatterND; onnxruntime runs an empty subset as a zero-length batch).
    Without it every view is computed for every face and masked: the same numbers, but it
    runs in TensorFlow, whose oneDNN kernels fail on zero-length batches, so evaluation and
    the export's parity reference use that form.
    """

    def __init__(self, logit_models, spec: CascadeSpec, shift, skip_confident: bool, **kwargs):
        super().__init__(**kwargs)
        self.logit_models, self.spec, self.skip_confident = logit_models, spec, skip_confident
        self.shift = ops.convert_to_tensor([shift or [0.0] * N_CLASSES], dtype="float32")

    def _sum(self, looks, stage):
        """Summed logits of one stage's views; `looks` maps each transform but the mirror
        ("", "z", "s", "zs") to the faces so transformed, and each mirror image is made once."""
        faces = {
            t: transform_faces(looks[t.replace("m", "")], "m") if "m" in t else looks[t]
            for t in dict.fromkeys(t for _, t in stage)
        }
        views = [self.logit_models[i](faces[t]) for i, t in stage]
        return views[0] if len(views) == 1 else ops.sum(ops.stack(views), axis=0)

    def call(self, x):
        # A zoom or smoothing (two matrix products) is made once for the whole batch and its
        # rows gathered with the faces, rather than made again for each stage's subset.
        bases = (t.replace("m", "") for stage in self.spec.stages for _, t in stage)
        looks = {b: transform_faces(x, b) for b in dict.fromkeys(bases)}
        total = self._sum(looks, self.spec.stages[0])
        seen = len(self.spec.stages[0])
        result = mean = total / seen  # every face's mean logits; those of the faces going on
        where = tf.range(tf.shape(x)[0])  # their rows in the batch
        going = None  # which faces go on, when every view is computed for every face
        for stage, margin in zip(self.spec.stages[1:], self.spec.margins, strict=True):
            doubtful = top2_margin(mean + self.shift) < margin
            seen += len(stage)
            if self.skip_confident:
                # tf.gather, not ops.take: its wrap-around of negative indices costs nodes
                rows = tf.where(doubtful)[:, 0]
                total, where = tf.gather(total, rows), tf.gather(where, rows)
                looks = {b: tf.gather(faces, rows) for b, faces in looks.items()}
                total = total + self._sum(looks, stage)
                mean = total / seen
                result = tf.tensor_scatter_nd_update(result, where[:, None], mean)
            else:
                going = doubtful if going is None else ops.logical_and(going, doubtful)
                total = total + self._sum(looks, stage)
                result = mean = ops.where(ops.expand_dims(going, 1), total / seen, result)
        return result

    def compute_output_shape(self, input_shape):
        return (input_shape[0], N_CLASSES)


def serving_model(
    models: list[keras.Model],
    temperature: float = 1.0,
    tta: bool = False,
    log_prior_shift: list[float] | None = None,
    cascade: CascadeSpec | None = None,
    skip_confident: bool = False,
) -> keras.Model:
    """softmax((mean logits + shift) / T) over the members, each optionally also mirrored.

    Averaging logits (not probabilities) keeps one temperature meaningful for the whole.
    Mirror test-time augmentation is folded into the graph so the service gets it for free:
    faces are left-right symmetric in meaning, so averaging both views reduces variance.
    `log_prior_shift` is `prior_correction`'s per-class constant. With `cascade`, its views
    replace "every member, optionally mirrored"; `skip_confident` builds the graph that
    computes later stages only for doubtful faces (for export: see `Cascade`).
    """
    x = keras.Input(models[0].input.shape[1:], name="input")
    logit_models = [
        keras.Model(
            model.input,
            model.get_layer("logits").output,
            name="logits_of" if len(models) == 1 else f"logits_of_{i}",
        )
        for i, model in enumerate(models)
    ]
    if cascade is not None:
        logits = Cascade(logit_models, cascade, log_prior_shift, skip_confident, name="cascade")(x)
    else:
        views = [x]
        if tta:
            views.append(layers.Lambda(lambda t: transform_faces(t, "m"), name="mirror")(x))
        all_logits = [lm(v) for lm in logit_models for v in views]
        logits = all_logits[0]
        if len(all_logits) > 1:
            logits = layers.Average(name="logit_mean")(all_logits)
    if log_prior_shift is not None:
        shift = ops.convert_to_tensor([log_prior_shift], dtype="float32")
        logits = layers.Lambda(lambda t: t + shift, name="prior_correction")(logits)
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    probs = layers.Softmax(name="probabilities_calibrated")(scaled)
    return keras.Model(x, probs, name=f"{models[0].name}_serving")

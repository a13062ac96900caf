"""Turn face crops into a model's input tensor.

Training and serving both call these functions, so a face is prepared identically in
both places. `normalize` uses plain arithmetic and slicing only, so it runs on NumPy
arrays in the service and on TensorFlow tensors inside a training graph alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Normalization = Literal["unit", "tf", "caffe", "none"]
Color = Literal["gray", "rgb"]

# ImageNet channel means in BGR order, as Keras' "caffe" preprocess_input uses them.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: NHWC size, colour, normalization, and the face resolution.

    `source_size` is the resolution the face is reduced to before it is resized to the
    model's input size: 48 for models trained on FER2013's 48x48 faces (so a 224x224
    transfer model sees the same upscaled 48x48 face it was trained on), or equal to
    `height` for models trained on larger crops.
    """

    height: int
    width: int
    channels: int
    color: Color = "gray"
    normalization: Normalization = "unit"
    source_size: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.color == "rgb" and self.channels != 3:
            raise ValueError("an rgb input needs 3 channels")

    @property
    def face_side(self) -> int:
        """Pixels across the face as the model sees them (before any upscaling)."""
        return self.source_size or self.height


def normalization(mode: Normalization, channels: int) -> tuple[float, np.ndarray, bool]:
    """`(divisor, offset, to_bgr)`: the model input is `x[..., order] / divisor + offset`.

    One description of every mode, so NumPy here and tensor code in training graphs apply
    the same numbers. `caffe` flips RGB to BGR like Keras' `preprocess_input` for VGG16 and
    removes the ImageNet channel means (with a single channel, their mean).
    """
    if mode == "unit":
        return 255.0, np.zeros(channels, np.float32), False
    if mode == "tf":
        return 127.5, np.full(channels, -1.0, np.float32), False
    if mode == "caffe":
        if channels == 3:
            return 1.0, -np.asarray(_CAFFE_MEAN_BGR, np.float32), True
        return 1.0, np.full(channels, -np.float32(np.mean(_CAFFE_MEAN_BGR)), np.float32), False
    if mode == "none":
        return 1.0, np.zeros(channels, np.float32), False
    raise ValueError(f"unknown normalization {mode!r}")


def normalize(x, mode: Normalization):
    """Map pixel values in [0, 255] to the model's input range (NumPy or TF tensors)."""
    divisor, offset, to_bgr = normalization(mode, x.shape[-1])
    if to_bgr:
        x = x[..., ::-1]
    if divisor != 1.0:
        x = x / divisor
    if not offset.any():
        return x
    return x + (offset[0] if np.all(offset == offset[0]) else offset)


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (or already gray) uint8 image to a 2-D gray image, ITU-R 601 luma like PIL's "L"."""
    if image.ndim == 2:
        return image
    if image.shape[-1] == 1:
        return image[..., 0]
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing) and bilinear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrink = height < h or width < w
    out = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    if image.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def prepare_face(face: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One face crop (HxW gray or HxWx3 RGB, any size, uint8 or float in [0, 255]) to HxWxC float32."""
    face = np.asarray(face)
    if spec.color == "gray":
        img = to_gray(face if face.dtype == np.uint8 else face.astype(np.float32))
    elif face.ndim == 2 or face.shape[-1] == 1:
        img = np.repeat(face.reshape(face.shape[0], face.shape[1], 1), 3, axis=-1)
    else:
        img = face
    img = img.astype(np.float32, copy=False)
    if spec.source_size and spec.source_size != spec.height:
        img = resize(img, spec.source_size, spec.source_size)
    img = resize(img, spec.height, spec.width)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] != spec.channels:
        img = np.repeat(img, spec.channels, axis=-1)
    return np.asarray(normalize(img, spec.normalization), dtype=np.float32)


def prepare_batch(faces: list[np.ndarray] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """Stack prepared faces into one NHWC float32 batch for a single inference call."""
    if len(faces) == 0:
        return np.zeros((0, spec.height, spec.width, spec.channels), dtype=np.float32)
    return np.stack([prepare_face(f, spec) for f in faces]).astype(np.float32, copy=False)

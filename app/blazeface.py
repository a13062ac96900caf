"""BlazeFace run directly: MediaPipe's face-detection graph, reproduced around the network.

The MediaPipe Tasks API sends every call through its own dispatcher thread and graph, which
costs more than the network itself on 2 cores. This module does what that graph does with
the same `.tflite` files, in the caller's thread: letterbox the photo into the network's
square input (bilinear, zero border, values in [-1, 1]), decode the raw tensors against
the SSD anchors MediaPipe builds for each model, merge overlapping detections by
score-weighted non-maximum suppression, and map the result back to the photo. The network
runs in LiteRT (`ai-edge-litert`), the runtime MediaPipe itself embeds.
`tests/test_blazeface.py` checks boxes and keypoints against the Tasks API on photos.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# What MediaPipe's face_detector graph sets for the two models (anchors and box decoding).
SUPPRESSION_IOU = 0.3
SCORE_CLIP = 100.0
# OpenCV 4's warp: positions in 1/32 pixel, rows computed in blocks of 64 output pixels.
_SUBPIXELS = 32
_WARP_BLOCK = 64
# cv2.remap's source positions are 16-bit.
_REMAP_LIMIT = 32767


@dataclass(frozen=True)
class AnchorSpec:
    """SSD anchor layout of one BlazeFace model (MediaPipe's SsdAnchorsCalculator options)."""

    input_side: int
    strides: tuple[int, ...]
    # Anchors per feature-map cell for each layer: the aspect ratio 1.0, plus the
    # interpolated scale where the model has one.
    per_layer: int

    def anchors(self) -> np.ndarray:
        """(N, 2) anchor centres in [0, 1], in the order of the network's outputs.

        Consecutive layers with the same stride share a feature map, as in MediaPipe; every
        anchor has a fixed size of 1, so only centres matter.
        """
        centres: list[np.ndarray] = []
        layer = 0
        while layer < len(self.strides):
            stride = self.strides[layer]
            same = 0
            while layer < len(self.strides) and self.strides[layer] == stride:
                same += 1
                layer += 1
            side = -(-self.input_side // stride)
            grid = (np.arange(side, dtype=np.float32) + 0.5) / side
            ys, xs = np.meshgrid(grid, grid, indexing="ij")
            cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
            centres.append(np.repeat(cell, same * self.per_layer, axis=0))
        return np.concatenate(centres)


SPECS: dict[int, AnchorSpec] = {
    128: AnchorSpec(128, (8, 16, 16, 16), 2),  # short range
    192: AnchorSpec(192, (4,), 1),  # full range
}


@dataclass(frozen=True)
class Detection:
    """One face: score, box (x, y, width, height) and six keypoints (6, 2) as x, y.

    `decode` gives them in normalized coordinates; `BlazeFace.detect` in photo pixels.
    """

    score: float
    box: tuple[float, float, float, float]
    keypoints: np.ndarray


def letterbox_maps(width: int, height: int, side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """`cv2.remap` maps that letterbox a `width` x `height` photo exactly as MediaPipe does.

    MediaPipe warps with OpenCV 4's `warpPerspective` (bilinear), which rounds each source
    position to 1/32 pixel, computed in 64-pixel blocks per row. OpenCV 5's warp is more
    precise, so its input would differ slightly from what the Tasks API feeds the network.
    These maps hold the same 1/32-pixel positions, in `cv2.remap`'s fixed-point form.
    Returns the two maps and the side of the square (in photo pixels) the input shows.
    """
    if max(width, height) >= _REMAP_LIMIT:
        raise ValueError(f"a {width}x{height} image is too large to letterbox; shrink it first")
    square = float(max(width, height))
    corners = cv2.boxPoints(((width / 2.0, height / 2.0), (square, square), 0.0))
    target = np.array([[0, side], [0, 0], [side, 0], [side, side]], dtype=np.float32)
    _, m = cv2.invert(cv2.getPerspectiveTransform(corners, target), flags=cv2.DECOMP_LU)
    xs = np.arange(side, dtype=np.float64)
    ys = xs[:, None]
    block = np.floor(xs / _WARP_BLOCK) * _WARP_BLOCK
    offset = xs - block

    def row(i: int) -> np.ndarray:  # OpenCV's order of operations, for the same rounding
        return m[i, 0] * offset + ((m[i, 0] * block + m[i, 1] * ys) + m[i, 2])

    w = row(2)
    w = np.where(w != 0, _SUBPIXELS / np.where(w != 0, w, 1.0), 0.0)
    x = np.rint(row(0) * w).astype(np.int32)
    y = np.rint(row(1) * w).astype(np.int32)
    shift = _SUBPIXELS.bit_length() - 1
    positions = np.stack([x >> shift, y >> shift], axis=-1).astype(np.int16)
    fractions = ((y & (_SUBPIXELS - 1)) * _SUBPIXELS + (x & (_SUBPIXELS - 1))).astype(np.uint16)
    return positions, fractions, square


def letterbox(rgb: np.ndarray, maps: tuple[np.ndarray, np.ndarray, float]) -> np.ndarray:
    """The photo centred in the network's square input, scaled to fit, zero outside it:
    (1, side, side, 3) in [-1, 1]. `maps` are `letterbox_maps` for the photo's size."""
    positions, fractions, _ = maps
    warped = cv2.remap(rgb, positions, fractions, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    tensor = warped.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return tensor[None]


def decode(
    regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray, side: int, min_score: float
) -> list[Detection]:
    """The raw outputs of one image as detections in the network input's [0, 1] square."""
    raw = regressors.reshape(-1, 16)
    logits = np.clip(scores.reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    with np.errstate(over="ignore"):  # exp(100) overflows float32 to inf: a score of 0
        probs = 1.0 / (1.0 + np.exp(-logits))
    # As MediaPipe: boxes of negative size or with a NaN are no detections (nor are
    # infinite values, which the weighted mean could not average).
    valid = (raw[:, 2] >= 0) & (raw[:, 3] >= 0) & np.isfinite(raw).all(axis=1)
    keep = np.flatnonzero((probs >= min_score) & valid)
    if keep.size == 0:
        return []
    raw, probs, centre = raw[keep] / side, probs[keep], anchors[keep]
    xy = raw[:, :2] + centre
    wh = raw[:, 2:4]
    boxes = np.concatenate([xy - wh / 2, wh], axis=1)
    keypoints = raw[:, 4:].reshape(-1, 6, 2) + centre[:, None, :]
    return weighted_nms(probs, boxes, keypoints)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y1 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(probs: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray) -> list[Detection]:
    """MediaPipe's weighted non-maximum suppression.

    The best remaining detection takes every one that overlaps it by more than
    `SUPPRESSION_IOU`, itself included, and becomes their score-weighted mean box and
    keypoints, keeping its own score.
    """
    order = np.argsort(-probs, kind="stable")
    found: list[Detection] = []
    while order.size:
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > SUPPRESSION_IOU
        overlap[0] = True  # its own group even when it has no area: every pass removes it
        group = order[overlap]
        weights = probs[group][:, None]
        total = weights.sum()
        corners = np.concatenate([boxes[group, :2], boxes[group, :2] + boxes[group, 2:]], axis=1)
        x0, y0, x1, y1 = (corners * weights).sum(axis=0) / total
        points = (keypoints[group] * weights[:, :, None]).sum(axis=0) / total
        found.append(Detection(float(probs[best]), (x0, y0, x1 - x0, y1 - y0), points))
        order = order[~overlap]
    return found


class BlazeFace:
    """One BlazeFace `.tflite` file in a LiteRT interpreter: a photo in, its faces out.

    Not thread-safe (one interpreter, one set of tensors): `app.faces.FaceDetector` keeps
    one per worker thread.
    """

    def __init__(self, model_path: Path, min_score: float, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.min_score = min_score
        # One interpreter with one thread, and one with `threads` for calls made alone.
        self._interpreters = [
            Interpreter(model_path=str(model_path), num_threads=n) for n in sorted({1, threads})
        ]
        for interpreter in self._interpreters:
            interpreter.allocate_tensors()
        first = self._interpreters[0]
        (source,) = first.get_input_details()
        self.side = int(source["shape"][1])
        if self.side not in SPECS:
            raise ValueError(f"{model_path} is not a BlazeFace model MediaPipe ships")
        self._input = source["index"]
        outputs = sorted(first.get_output_details(), key=lambda d: -d["shape"][-1])
        self._regressors, self._scores = (d["index"] for d in outputs)
        self._anchors = SPECS[self.side].anchors()
        # Photos often come in a few sizes (one camera, one app): the maps are kept per size.
        self._maps = functools.lru_cache(maxsize=16)(
            functools.partial(letterbox_maps, side=self.side)
        )

    def detect(self, rgb: np.ndarray, alone: bool = False) -> list[Detection]:
        """Faces in an RGB uint8 photo, best first, in its pixels.

        `alone`: no other detection runs beside this call, so it may use every thread.
        """
        if not self._interpreters:
            raise RuntimeError("face detector is closed")
        interpreter = self._interpreters[-1 if alone else 0]
        height, width = rgb.shape[:2]
        maps = self._maps(width, height)
        tensor, square = letterbox(rgb, maps), maps[2]
        interpreter.set_tensor(self._input, tensor)
        interpreter.invoke()
        found = decode(
            interpreter.get_tensor(self._regressors),
            interpreter.get_tensor(self._scores),
            self._anchors,
            self.side,
            self.min_score,
        )
        # From the square input back to the photo (normalized), then to pixels as the Tasks
        # API reports them: the corner clamped to the photo and truncated, the size capped
        # at the photo's and truncated; keypoints stay exact.
        sx, sy = square / width, square / height
        ox, oy = (1.0 - sx) / 2.0, (1.0 - sy) / 2.0
        faces = []
        for d in found:
            x, y, w, h = d.box[0] * sx + ox, d.box[1] * sy + oy, d.box[2] * sx, d.box[3] * sy
            box = (
                float(int(max(0.0, x) * width)),
                float(int(max(0.0, y) * height)),
                float(int(min(1.0, w) * width)),
                float(int(min(1.0, h) * height)),
            )
            points = (d.keypoints * [sx, sy] + [ox, oy]) * [width, height]
            faces.append(Detection(d.score, box, points))
        return faces

    def close(self) -> None:
        """Drop the interpreters now rather than with the object; later calls fail."""
        self._interpreters = []

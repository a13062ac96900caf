"""Cut a detected face out of a photo, levelled and framed like a FER2013 crop.

Models trained on FER2013 expect its framing: a tight square from about the eyebrows to
the chin with the face filling most of the frame. We rotate about the eye centre so the
eyes are level, then take a square whose size and centre are fixed multiples of the
detected box, measured on the dataset itself by `python -m training.tools.framing`
(its figures, and the command, are in docs/api.md under "FER2013 framing").

The constants are the short-range medians (the service's default detector); the full-range
ones differ by much less than the spread between crops. The horizontal offset is zero by
symmetry (the measured one is noise). The box, not the eye distance, sets the scale: it is
as consistent on FER and does not shrink when a head turns sideways.

One `cv2.warpAffine` does the rotation, the crop and the border padding (replicated, for faces
near the edge) at the face's natural resolution; shrinking to a requested size then uses the
same area-averaging resize as preprocessing.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from app.faces import Face
from app.preprocess import resize

FRAME_SIDE_PER_BOX = 1.200
"""Side of the FER-like square, in detected box widths."""
FRAME_DX_PER_BOX = 0.0
"""Frame centre minus eye centre along the (levelled) eye line, in box widths."""
FRAME_DY_PER_BOX = 0.121
"""Frame centre minus eye centre towards the mouth, in box widths."""


def face_frame(face: Face) -> tuple[float, float, float, float] | None:
    """The FER-like square for a detection: centre x, centre y, side (pixels), roll (radians).

    None when the face has no eye keypoints (a whole-image stand-in face).
    """
    if face.frame is None or "right_eye" not in face.keypoints or "left_eye" not in face.keypoints:
        return None
    rx, ry = face.keypoints["right_eye"]
    lx, ly = face.keypoints["left_eye"]
    angle = math.atan2(ly - ry, lx - rx)
    box_w = face.frame[2]
    dx, dy = FRAME_DX_PER_BOX * box_w, FRAME_DY_PER_BOX * box_w
    c, s = math.cos(angle), math.sin(angle)
    cx = (rx + lx) / 2 + c * dx - s * dy
    cy = (ry + ly) / 2 + s * dx + c * dy
    return cx, cy, FRAME_SIDE_PER_BOX * box_w, angle


def align_crop(rgb: np.ndarray, face: Face, size: int | None = None) -> np.ndarray:
    """The face as a levelled square RGB crop (size x size, or its natural size when None).

    A face without eye keypoints is cut out along its box unrotated, so a whole-image face
    is the image itself.
    """
    frame = face_frame(face)
    if frame is None:
        b = face.box
        crop = np.ascontiguousarray(rgb[b.y : b.y + b.height, b.x : b.x + b.width])
        return crop if size is None else resize(crop, size, size)
    cx, cy, side, angle = frame
    n = max(1, int(round(side)))
    scale = side / n
    c, s = math.cos(angle), math.sin(angle)
    # Output pixel (u, v) samples image point centre + R(angle) @ ((u + .5) * scale - side / 2,
    # (v + .5) * scale - side / 2); OpenCV indexes pixel centres at integers, hence the -0.5.
    off = 0.5 * scale - side / 2
    inverse = np.array(
        [
            [c * scale, -s * scale, cx + c * off - s * off - 0.5],
            [s * scale, c * scale, cy + s * off + c * off - 0.5],
        ],
        dtype=np.float64,
    )
    crop = cv2.warpAffine(
        rgb,
        inverse,
        (n, n),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return crop if size is None else resize(crop, size, size)

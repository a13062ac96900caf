"""What the container image can import, reproduced inside this (bigger) virtualenv.

The image installs only `[project].dependencies` of pyproject.toml and copies `app/`; the
development virtualenv also holds TensorFlow, onnx, scikit-image, pytest and the `training`
package. `serving_distributions()` resolves the serving dependency closure from the installed
metadata, and `import_guard_dir()` writes a `sitecustomize.py` that makes every other
top-level package unimportable, so a subprocess started with that folder on PYTHONPATH sees
what the image would: an accidental import of a training-only package fails there as it
would in the container.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "emotion-service"
# Importable from the image's working directory besides the installed packages.
IMAGE_SOURCES = {"app"}


def serving_distributions() -> set[str]:
    """Canonical names of the distributions `pip install <[project].dependencies>` installs."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    seen: set[str] = set()
    todo = [Requirement(d) for d in deps]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for spec in dist.requires or []:
            sub = Requirement(spec)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return seen


def blocked_modules() -> set[str]:
    """Top-level modules of this virtualenv that the image does not have."""
    serving = serving_distributions()
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

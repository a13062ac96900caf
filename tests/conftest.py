"""Shared fixtures: detector files, tiny-model registries and apps built on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.assets import fetch
from app.settings import Settings
from tests.tiny_models import tiny_registry

REPO = Path(__file__).resolve().parents[1]
ASSETS_DIR = REPO / ".cache" / "assets"


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The MediaPipe detector files, fetched once if this checkout has not cached them yet."""
    fetch(Settings(assets_dir=ASSETS_DIR))
    return ASSETS_DIR


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the two standard tiny models (gray48 default, rgb224)."""
    models_dir = tmp_path_factory.mktemp("models")
    tiny_registry(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def make_settings(assets_dir: Path) -> Callable[..., Settings]:
    """Settings for a test app: the cached detectors, small pools, any overrides."""

    def make(models_dir: Path, **overrides) -> Settings:
        values = {
            "models_dir": models_dir,
            "assets_dir": assets_dir,
            "worker_threads": 2,
            "inference_threads": 1,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def make_client(make_settings) -> Iterator[Callable[..., TestClient]]:
    """Build an app with `create_app(settings)` and start it (lifespan runs); closed at exit."""
    from app.main import create_app

    clients: list[TestClient] = []

    def make(models_dir: Path, **overrides) -> TestClient:
        client = TestClient(create_app(make_settings(models_dir, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def client(make_client, tiny_models_dir: Path) -> TestClient:
    """The default test app on the tiny registry."""
    return make_client(tiny_models_dir)

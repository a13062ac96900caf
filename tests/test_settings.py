"""Settings read from the environment: spellings users write, and combinations that cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_an_empty_api_key_means_no_key(monkeypatch, make_client, tiny_models_dir):
    monkeypatch.setenv("EMOTION_API_KEY", "")
    assert Settings().api_key is None
    client = make_client(tiny_models_dir, api_key="")
    assert client.get("/models", headers={"X-API-Key": "anything"}).status_code == 200


@pytest.mark.parametrize("spelled", ["INFO", "Warning", "debug"])
def test_log_level_in_any_case(monkeypatch, spelled):
    monkeypatch.setenv("EMOTION_LOG_LEVEL", spelled)
    assert Settings().log_level == spelled.lower()


def test_default_max_faces_above_its_limit_is_refused(monkeypatch):
    monkeypatch.setenv("EMOTION_MAX_FACES", "200")
    with pytest.raises(ValidationError, match="EMOTION_MAX_FACES_LIMIT"):
        Settings()
    monkeypatch.setenv("EMOTION_MAX_FACES_LIMIT", "200")
    assert Settings().max_faces == 200


def test_python_m_app_names_a_bad_setting_and_exits_2():
    env = {**os.environ, "EMOTION_MAX_FACES": "200", "EMOTION_MAX_FACES_LIMIT": "100"}
    done = subprocess.run(
        [sys.executable, "-m", "app"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "invalid settings" in done.stderr and "EMOTION_MAX_FACES (200)" in done.stderr
    assert "Traceback" not in done.stderr

"""The model registry: one JSON manifest (`models/registry.json`) describing every ONNX model.

The service reads it at start-up and the training package's export step writes it, so
this schema is the contract between the two.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.preprocess import Color, InputSpec, Normalization

REGISTRY_FILE = "registry.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A registry name is also the ONNX file's stem and the `?model=` value: no spaces or paths."""


class InputInfo(BaseModel):
    """The model's input tensor (NHWC, float32) and how faces are prepared for it."""

    model_config = ConfigDict(extra="forbid")

    layout: Literal["NHWC"] = "NHWC"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3]
    color: Color = "gray"
    normalization: Normalization = "unit"
    source_size: int | None = Field(default=None, gt=0)

    def spec(self) -> InputSpec:
        return InputSpec(
            self.height, self.width, self.channels, self.color, self.normalization, self.source_size
        )


class ModelEntry(BaseModel):
    """One registered model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=NAME_PATTERN)
    version: str
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    labels: list[str] = Field(min_length=2)
    input: InputInfo
    output: Literal["probabilities", "logits"] = "probabilities"
    temperature: float = Field(default=1.0, gt=0)
    temperature_in_graph: bool = True
    default: bool = False
    description: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, v: str) -> str:
        # Only a bare file name inside the models folder: never a path a manifest could
        # use to point the service at arbitrary files.
        if Path(v).name != v or v in ("", ".", ".."):
            raise ValueError("file must be a bare file name inside the models folder")
        return v


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry]

    @model_validator(mode="after")
    def _unique_and_one_default(self) -> Registry:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        if sum(m.default for m in self.models) > 1:
            raise ValueError("at most one model can be the default")
        return self

    def get(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def default(self) -> ModelEntry | None:
        return next((m for m in self.models if m.default), self.models[0] if self.models else None)


def load_registry(models_dir: Path) -> Registry:
    """Parse and validate `models_dir/registry.json` (raises on a malformed manifest)."""
    return Registry.model_validate_json((Path(models_dir) / REGISTRY_FILE).read_text())


def save_registry(registry: Registry, models_dir: Path) -> None:
    path = Path(models_dir) / REGISTRY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(registry.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)


def claim_name(models_dir: Path, name: str, replace: bool) -> bool:
    """Check, before anything is written, that `name` may be (re)registered.

    A valid name not yet registered is free; a registered one only with `replace`, so an
    export cannot silently overwrite a shipped model. Returns whether the entry being
    replaced is the default (a replacement keeps that role).
    """
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a model name: letters, digits, '_', '.', '-'")
    path = Path(models_dir) / REGISTRY_FILE
    old = load_registry(models_dir).get(name) if path.exists() else None
    if old is not None and not replace:
        role = ", the default" if old.default else ""
        raise FileExistsError(
            f"{name!r} is already registered in {path} (version {old.version}{role}); "
            "pass --replace to overwrite it"
        )
    return old is not None and old.default


def upsert(models_dir: Path, entry: ModelEntry) -> Registry:
    """Add or replace an entry; a new default clears the flag on every other entry."""
    entry = ModelEntry.model_validate(entry.model_dump())  # model_copy(update=) skips checks
    path = Path(models_dir) / REGISTRY_FILE
    registry = load_registry(models_dir) if path.exists() else Registry(models=[])
    models = [m for m in registry.models if m.name != entry.name]
    if entry.default:
        models = [m.model_copy(update={"default": False}) for m in models]
    registry = Registry(models=[*models, entry])
    save_registry(registry, models_dir)
    return registry

"""A run folder's `config.json`: its schema, and the one place it is read and written.

`train` writes it (the exact command, options and data fingerprint); `ensemble`, `cascade` and
`recover` write folders that `evaluate` and `export` treat as runs. Every field but `model` is
optional, with the default older folders were read with, so runs from before a field existed
still load; fields this schema does not name are kept as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_FILE = "config.json"
# The share of train/ held out for validation (training.split); recorded in each run's config.
VAL_FRACTION = 0.1


class RunOptions(BaseModel):
    """train's options as the run recorded them (training.fit.TrainOptions); the ones read back
    are typed, with the defaults older runs were read with, the rest kept as they are."""

    model_config = ConfigDict(extra="allow")

    data: str | None = None
    seed: int | None = None
    split_seed: int | None = None  # None: the split follows `seed`
    limit_per_class: int | None = None
    teacher: str | None = None
    teacher_weight: float = 0.0  # runs from before distillation had no teacher
    one_resampling: bool = False

    @field_validator("data", "teacher", mode="before")
    @classmethod
    def _path_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    def recorded(self) -> dict[str, Any]:
        """The options as the file spells them (only those the run recorded)."""
        return self.model_dump(exclude_unset=True)


class RunConfig(BaseModel):
    """What a run (or an ensemble or cascade folder) was made from."""

    model_config = ConfigDict(extra="allow")

    model: str  # the architecture (for an ensemble: the one whose input every member shares)
    command: str = ""  # `python -m training ...` as typed
    options: RunOptions = Field(default_factory=RunOptions)
    epochs: int | list[int] | None = None  # a list for an ensemble: each member's
    batch_size: int | None = None
    learning_rate: float | None = None
    mixup: float | None = None
    recipe: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    class_weights: dict[str, float] | None = None  # by class index, as JSON spells it
    data_fingerprint: str | None = None
    added_data_fingerprint: str | None = None
    val_fraction: float = VAL_FRACTION  # runs from before the field used VAL_FRACTION
    members: list[str] = Field(default_factory=list)  # an ensemble's or a cascade's runs
    member_models: list[str] = Field(default_factory=list)
    member_commands: list[str] = Field(default_factory=list)
    cascade: dict[str, Any] | None = None  # CascadeSpec.as_dict() and how it was chosen
    resumed_with: list[str] = Field(default_factory=list)
    recovered_with: str | None = None
    recovered_from: str | None = None

    @field_validator("class_weights", mode="before")
    @classmethod
    def _string_keys(cls, v: Any) -> Any:
        return {str(k): w for k, w in v.items()} if isinstance(v, dict) else v

    @classmethod
    def coerce(cls, config: RunConfig | dict[str, Any]) -> RunConfig:
        """A RunConfig as it is, or one from a plain dict (as tests and older callers pass)."""
        return config if isinstance(config, RunConfig) else cls.model_validate(config)

    def to_json(self) -> str:
        # only the fields that were given: a folder's file says what its writer wrote
        return json.dumps(self.model_dump(exclude_unset=True), indent=2, default=str)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """`run_dir/config.json`; FileNotFoundError without one, RuntimeError for a bad one."""
    path = Path(run_dir) / CONFIG_FILE
    return parse_run_config(path.read_text(), str(path))


def parse_run_config(text: str | bytes, source: str = CONFIG_FILE) -> RunConfig:
    try:
        return RunConfig.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise RuntimeError(f"{source} is not a run's config: {problems}") from None


def write_run_config(run_dir: str | Path, config: RunConfig) -> Path:
    """Write `run_dir/config.json` (the folder must exist)."""
    path = Path(run_dir) / CONFIG_FILE
    path.write_text(config.to_json())
    return path

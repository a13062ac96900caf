"""A run folder's config.json: one schema, read and written in one place."""

from __future__ import annotations

import json

import pytest

from training.run_config import VAL_FRACTION, RunConfig, read_run_config, write_run_config


def test_round_trip(tmp_path):
    config = RunConfig(
        model="emonet",
        command="python -m training train --model emonet",
        options={"data": "../shared/fer2013", "seed": 1, "limit_per_class": None},
        epochs=3,
        batch_size=64,
        learning_rate=1e-3,
        mixup=0.2,
        class_weights={0: 1.5, 1: 0.5},  # as class_weights() returns them
        data_fingerprint="abc",
        val_fraction=VAL_FRACTION,
    )
    write_run_config(tmp_path, config)
    back = read_run_config(tmp_path)
    assert back == config
    assert back.class_weights == {"0": 1.5, "1": 0.5}
    assert back.options.data == "../shared/fer2013" and back.options.seed == 1
    # the file holds what the writer gave, nothing more
    written = json.loads((tmp_path / "config.json").read_text())
    assert "members" not in written and "cascade" not in written
    assert written["class_weights"] == {"0": 1.5, "1": 0.5}


def test_an_old_run_folder_still_loads(tmp_path):
    # before val_fraction, added data, mixup and the learning rate were recorded
    old = {
        "model": "cnn_scratch",
        "command": "python -m training train --model cnn_scratch",
        "options": {"data": "fer", "seed": 3},
        "epochs": 40,
        "batch_size": 64,
        "data_fingerprint": "f00",
        "something_later_dropped": [1, 2],
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = read_run_config(tmp_path)
    assert config.val_fraction == VAL_FRACTION
    assert config.learning_rate is None and config.mixup is None
    assert config.members == [] and config.cascade is None and config.class_weights is None
    assert config.added_data_fingerprint is None
    assert config.options.split_seed is None and config.options.teacher is None
    assert config.options.teacher_weight == 0.0 and not config.options.one_resampling
    # unknown fields survive a rewrite
    write_run_config(tmp_path, config)
    assert json.loads((tmp_path / "config.json").read_text()) == old


def test_an_ensemble_folder_loads_with_its_members(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model": "emonet", "members": ["a", "b"], "epochs": [30, 40]})
    )
    config = read_run_config(tmp_path)
    assert config.members == ["a", "b"] and config.epochs == [30, 40]


def test_coerce_takes_a_plain_dict():
    assert RunConfig.coerce({"model": "emonet"}).model == "emonet"
    config = RunConfig(model="emonet")
    assert RunConfig.coerce(config) is config


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"epochs": 3}', "model: Field required"),
        ('{"model": "emonet", "epochs": "many"}', "epochs"),
        ("not json", "Invalid JSON"),
    ],
)
def test_a_bad_file_gives_a_clear_error(tmp_path, text, says):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RuntimeError, match="is not a run's config") as info:
        read_run_config(tmp_path)
    assert says in str(info.value) and str(tmp_path / "config.json") in str(info.value)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_run_config(tmp_path)

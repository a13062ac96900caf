"""The validation split of a Kaggle-layout `train/`, in its own module so that training,
evaluation, selection and recovery all take it from one place without importing the trainer."""

from __future__ import annotations

from pathlib import Path

from training.data import Split, load_split, stratified_split
from training.run_config import VAL_FRACTION

__all__ = ["VAL_FRACTION", "split_train"]


def split_train(
    data: str | Path, limit_per_class: int | None, split_seed: int, val_fraction: float
) -> tuple[Split, Split, str]:
    """Training and validation halves of `data/train`, and the data fingerprint.

    Evaluation calls this with the run's recorded seed to get the same validation faces;
    ensemble members share one `split_seed` so none of them has trained on the others'
    validation faces.
    """
    full, fingerprint = load_split(data, "train", limit_per_class, split_seed)
    train_split, val_split = stratified_split(full, val_fraction, split_seed)
    return train_split, val_split, fingerprint

"""Teacher targets for distillation.

An ensemble is more accurate than its members but costs one network per member at
inference. Distillation trains one network on a mix of the true labels and the
ensemble's probabilities (its "dark knowledge": which wrong classes a face resembles), so
the service gets most of the ensemble's accuracy at one network's cost.

The teacher's probabilities are computed once, on the un-augmented training faces with
mirror TTA (so they do not depend on the flip augmentation), and reused every epoch. A
class-weighted teacher gets its prior correction first, so its targets follow the real
class prior like the labels they are mixed with; the student's own class weights then
apply to both alike.
They are saved in the student's run folder, so a resumed run trains on exactly the
targets it started with and does not pay for scoring again.
The teacher must have been trained on the same data with the same validation split:
a teacher that saw the student's validation faces would leak them into its targets.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from app.labels import EMOTIONS
from training import architectures
from training.data import Split, check_same_split
from training.graph import load_members, prior_correction, serving_model
from training.run_config import RunConfig, read_run_config


def teacher_probabilities(
    teacher: str | Path, student_config: RunConfig, train: Split
) -> np.ndarray:
    """The teacher run's (or ensemble's) prior-corrected mirror-TTA probabilities for the
    training faces."""
    from training.evaluate import predict_keras

    teacher = Path(teacher)
    config = read_run_config(teacher)
    check_same_split(teacher, config, student_config)
    arch = architectures.get(config.model)
    policy = keras.mixed_precision.global_policy().name
    model = serving_model(
        load_members(teacher, config), tta=True, log_prior_shift=prior_correction(config)
    )
    probs = predict_keras(model, train, arch.input)
    keras.mixed_precision.set_global_policy(policy)  # load_members switches to float32
    return probs.astype(np.float32)


def run_teacher_targets(
    run: Path, student_config: RunConfig, train: Split, resuming: bool
) -> np.ndarray:
    """The teacher targets a resumed run saved in `run`, or scored now and saved there."""
    cache = run / "teacher_probs.npy"
    if resuming and cache.exists():
        probs = np.load(cache)
        if probs.shape == (len(train), len(EMOTIONS)):
            print(f"teacher targets: reusing {cache}")
            return probs
    teacher = student_config.options.teacher
    print(f"teacher {teacher}: scoring {len(train)} training faces")
    probs = teacher_probabilities(teacher, student_config, train)
    np.save(cache, probs)
    return probs

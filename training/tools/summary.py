"""`python -m training models`: what can be trained, with shapes and parameter counts."""

from __future__ import annotations

import numpy as np

from training.architectures import ARCHITECTURES


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return trainable, frozen


def print_models() -> None:
    print(
        f"{'name':14s} {'input':12s} {'total':>12s} {'trainable':>12s} {'frozen':>12s}  description"
    )
    for name, arch in ARCHITECTURES.items():
        model = arch.build(None)
        trainable, frozen = parameter_counts(model)
        shape = f"{arch.input.height}x{arch.input.width}x{arch.input.channels}"
        print(
            f"{name:14s} {shape:12s} {trainable + frozen:>12,d} {trainable:>12,d} {frozen:>12,d}  "
            f"{arch.description}"
        )

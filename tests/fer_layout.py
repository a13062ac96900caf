"""Write tiny generated datasets in the Kaggle FER2013 folder layout for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from app.labels import EMOTIONS


def write_fer_folder(root: Path, per_class: int = 6, seed: int = 0, size: int = 48) -> Path:
    """`root/{train,test}/<class>/*.jpg`: noisy gray images with a class-specific bright bar."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        for c, label in enumerate(EMOTIONS):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 80, (size, size)).astype(np.uint8)
                row = (c * size) // len(EMOTIONS)
                img[row : row + size // len(EMOTIONS)] = 220
                Image.fromarray(img, "L").save(folder / f"{split}_{c}_{i}.jpg", quality=95)
    return root

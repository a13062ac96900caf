"""Carry a run between machines as one small file: its best weights and its records.

A run trained elsewhere (an accelerator whose outputs come back in size-limited files) needs
only its best checkpoint's weights and the text files that evaluation and export read. The
weights travel as float16 where that is exact to 1e-3 of each value (float32 otherwise),
which halves a float32 checkpoint, and the run folder is rebuilt here with the same
architecture code, so evaluate, export and quantize treat it as any other run.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from training import architectures
from training.plots import plot_learning_curves
from training.run_config import parse_run_config

RECORDS = ("config.json", "history.csv", "state.json")
REL_TOL = 1e-3


def _compact(w: np.ndarray) -> np.ndarray:
    """`w` as float16 when every value survives to REL_TOL, else as it is."""
    if w.dtype != np.float32:
        return w
    half = w.astype(np.float16)
    err = np.abs(half.astype(np.float32) - w)
    ok = np.isfinite(half).all() and bool(np.all(err <= REL_TOL * np.abs(w) + 1e-7))
    return half if ok else w


def pack_run(run: str | Path, out: str | Path) -> Path:
    """Write `run`'s best weights and records to `out` (an .npz)."""
    run, out = Path(run), Path(out)
    model = keras.models.load_model(run / "best.keras", compile=False)
    weights = [_compact(np.asarray(w)) for w in model.get_weights()]
    records = {f"record:{n}": np.frombuffer((run / n).read_bytes(), np.uint8) for n in RECORDS}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez(fh, **{f"w{i:04d}": w for i, w in enumerate(weights)}, **records)
    halves = sum(w.dtype == np.float16 for w in weights)
    print(
        f"packed {run} into {out} ({out.stat().st_size / 1e6:.1f} MB, "
        f"{halves} of {len(weights)} weight arrays as float16)"
    )
    return out


def unpack_run(pack: str | Path, out: str | Path) -> Path:
    """Rebuild a run folder from a `pack_run` file: best.keras (float32) and its records."""
    out = Path(out)
    if (out / "best.keras").exists():
        raise FileExistsError(f"{out} already holds a run")
    with np.load(Path(pack)) as z:
        records = {k.removeprefix("record:"): z[k].tobytes() for k in z.files if "record:" in k}
        weights = [z[k].astype(np.float32) for k in sorted(k for k in z.files if k[0] == "w")]
    config = parse_run_config(records["config.json"], f"{pack}: config.json")
    keras.mixed_precision.set_global_policy("float32")
    model = architectures.get(config.model).build(None)
    model.set_weights(weights)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in records.items():
        (out / name).write_bytes(data)
    model.save(out / "best.keras")
    plot_learning_curves([out / "history.csv"], out / "learning_curves.png")
    print(f"unpacked {len(weights)} weight arrays of {config.model} into {out}")
    return out

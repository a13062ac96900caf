"""Tiny real ONNX emotion models and registries, written into a test's temporary folder.

Each model average-pools its NHWC input over a coarse grid, multiplies by fixed random
weights and ends in a softmax, so its output depends on the face it is given while the whole
graph stays a few kilobytes. Tests run them with the real onnxruntime. One deliberately slow
model (`write_slow_model`) keeps a request in flight for the shutdown tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.files import sha256_file
from app.labels import EMOTIONS
from app.registry import InputInfo, ModelEntry, Registry, save_registry

OPSET = 17


@dataclass(frozen=True)
class TinySpec:
    """What to build: input size, pooling grid, output kind and optional oddities."""

    height: int
    width: int
    channels: int
    grid: int = 6
    n_outputs: int = len(EMOTIONS)
    output: str = "probabilities"  # or "logits"
    batch_dim: str | int = "N"
    nan_on_white: bool = False  # emit NaN for an all-white input (mean pixel > 0.99)
    seed: int = 0


def build_model(spec: TinySpec) -> onnx.ModelProto:
    rng = np.random.default_rng(spec.seed)
    g = spec.grid
    ph, pw = spec.height // g, spec.width // g
    assert ph * g == spec.height and pw * g == spec.width, "grid must divide the input size"
    features = g * g * spec.channels
    weights = rng.normal(0, 0.5, (features, spec.n_outputs)).astype(np.float32)
    bias = rng.normal(0, 0.1, (spec.n_outputs,)).astype(np.float32)
    inits = [
        numpy_helper.from_array(
            np.array([-1, g, ph, g, pw, spec.channels], np.int64), "grid_shape"
        ),
        numpy_helper.from_array(np.array([-1, features], np.int64), "flat_shape"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "B"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input", "grid_shape"], ["cells"]),
        helper.make_node("ReduceMean", ["cells"], ["pooled"], axes=[2, 4], keepdims=0),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits_raw"]),
    ]
    last = "logits_raw"
    if spec.nan_on_white:
        inits += [
            numpy_helper.from_array(np.array(0.99, np.float32), "white"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ]
        nodes += [
            helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["white", "mean"], ["margin"]),
            helper.make_node("Sqrt", ["margin"], ["root"]),  # NaN when the mean is above 0.99
            helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
            helper.make_node("Add", [last, "nan_or_zero"], ["logits_checked"]),
        ]
        last = "logits_checked"
    if spec.output == "probabilities":
        nodes.append(helper.make_node("Softmax", [last], ["output"], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", [last], ["output"]))
    graph = helper.make_graph(
        nodes,
        "tiny_emotion",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, [spec.batch_dim, spec.height, spec.width, spec.channels]
            )
        ],
        [
            helper.make_tensor_value_info(
                "output", TensorProto.FLOAT, [spec.batch_dim, spec.n_outputs]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model(path: Path, spec: TinySpec) -> str:
    """Write the model and return its sha256."""
    onnx.save(build_model(spec), str(path))
    return sha256_file(path)


def write_slow_model(path: Path, trips: int) -> str:
    """A 48x48x1 model whose cost grows with the batch: a Loop of `trips` 256x256 MatMuls per
    row block (about 0.1 s per 32 faces per 1000 trips on a busy core). Returns its sha256."""
    w = np.random.default_rng(0).normal(0, 1 / 16, (256, 256)).astype(np.float32)
    value = helper.make_tensor_value_info
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W"], ["m"]),
            helper.make_node("Tanh", ["m"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            value("i", TensorProto.INT64, []),
            value("cond_in", TensorProto.BOOL, []),
            value("h_in", TensorProto.FLOAT, None),
        ],
        [value("cond_out", TensorProto.BOOL, []), value("h_out", TensorProto.FLOAT, None)],
    )
    inits = [
        numpy_helper.from_array(np.array([-1, 256], np.int64), "rows"),
        numpy_helper.from_array(np.array([-1, 2304], np.int64), "flat"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array(trips, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "yes"),
        numpy_helper.from_array(np.zeros((2304, 7), np.float32), "head"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input", "rows"], ["h0"]),
        helper.make_node("Loop", ["trips", "yes", "h0"], ["h"], body=body),
        helper.make_node("Reshape", ["h", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "head"], ["z"]),
        helper.make_node("Softmax", ["z"], ["output"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [value("input", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [value("output", TensorProto.FLOAT, ["N", 7])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return sha256_file(path)


def entry_for(name: str, file: str, sha256: str, spec: TinySpec, **fields) -> ModelEntry:
    color = "gray" if spec.channels == 1 else "rgb"
    normalization = "unit" if spec.channels == 1 else "tf"
    values = {
        "name": name,
        "version": "0.0.1",
        "file": file,
        "sha256": sha256,
        "labels": list(EMOTIONS),
        "output": spec.output,
        "input": InputInfo(
            height=spec.height,
            width=spec.width,
            channels=spec.channels,
            color=color,
            normalization=normalization,
            source_size=48 if spec.height != 48 else None,
        ),
        "description": f"tiny test model {spec.height}x{spec.width}x{spec.channels}",
        "metrics": {"accuracy": 0.14, "dataset": "none (random weights)"},
    }
    values.update(fields)
    return ModelEntry(**values)


GRAY48 = TinySpec(48, 48, 1, grid=6, seed=1)
RGB224 = TinySpec(224, 224, 3, grid=7, seed=2)


def add_model(models_dir: Path, name: str, spec: TinySpec, **fields) -> ModelEntry:
    """Write one model file and return its registry entry (not yet saved)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    file = f"{name}.onnx"
    sha = write_model(models_dir / file, spec)
    return entry_for(name, file, sha, spec, **fields)


def write_registry(models_dir: Path, entries: list[ModelEntry]) -> Registry:
    registry = Registry(models=entries)
    save_registry(registry, models_dir)
    return registry


def tiny_registry(models_dir: Path) -> Registry:
    """The standard test registry: gray 48x48x1 (default) and rgb 224x224x3 models."""
    return write_registry(
        models_dir,
        [
            add_model(models_dir, "gray48", GRAY48, default=True),
            add_model(models_dir, "rgb224", RGB224),
        ],
    )

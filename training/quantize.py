"""Post-training int8 quantization of a registered ONNX model (onnxruntime, static, QDQ).

int8 convolutions run several times faster than float32 on CPUs with VNNI, which is what
keeps a face under a millisecond. Activation ranges are calibrated on faces from the
training split (never test); the quantized model is then scored on test with the same
evaluation code and refused if it loses more than `max_drop` accuracy.

Weights are quantized to 7 bits (`reduce_range`). On x86 CPUs without VNNI (AVX2 only, or
AVX-512 before VNNI), onnxruntime's uint8 x int8 kernels add pairs of products in 16-bit
registers, which saturate with full 8-bit weights: the same file then answers differently,
and worse, than on the machine that quantized it. With 7-bit weights no pair can overflow,
so every CPU computes the same integers.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from app.files import sha256_file
from app.preprocess import prepare_batch
from app.registry import claim_name, load_registry, upsert
from training.data import load_split
from training.dequantize import dequantize, is_quantized, largest_int8_weight
from training.evaluate import predict_onnx_file, write_evaluation
from training.metrics import HEADLINE_KEYS
from training.onnx_nodes import data_inputs

CALIBRATION_FACES = 1024
WEIGHT_BITS = 7


def _calibration_reader(batches: list[np.ndarray], input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    return Reader()


# The `logits` layers (every architecture has one) and everything after them (mirror-TTA mean,
# temperature, softmax) stay float: quantizing them would round the logits and the returned
# probabilities to 256 levels, for a negligible share of the compute.
_LOGITS_NODE = re.compile(r"/logits(_\d+)?/")
# What an int8 entry's description says of its quantization, replaced when it is requantized.
_INT8_CLAUSE = re.compile(r"; int8 \(static QDQ.*$")


def _head_nodes(model_path: Path) -> list[str]:
    """Names of the logits nodes and of every node whose data flows from them.

    A cascade's later stages take faces by indices computed from the logits, but their
    convolutions are still to be quantized: index inputs do not count (`data_inputs`).
    """
    head, tensors = [], set()
    for node in onnx.load(str(model_path)).graph.node:  # topologically sorted
        if _LOGITS_NODE.search(node.name) or tensors.intersection(data_inputs(node)):
            head.append(node.name)
            tensors.update(node.output)
    return head


def quantize_registered(
    models_dir: str | Path,
    source: str,
    name: str,
    data: str | Path,
    *,
    default: bool = False,
    max_drop: float = 0.01,
    reports_dir: str | Path = "docs/results",
    seed: int = 0,
    replace: bool = False,
    source_models_dir: str | Path | None = None,
    version: str | None = None,
):
    """Quantize registry entry `source` into `name`, evaluate it on test/, and register it.

    An existing `name` is only overwritten with `replace` (it stays the default if it was).
    `source_models_dir` (default `models_dir`) lets the float32 source stay out of the shipped
    registry, for a graph only worth serving in int8 (the mirror-TTA ensemble). `version`
    (default: the source's) tells a requantized file from the one it replaces.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from app.inference import cpu_session

    models_dir = Path(models_dir)
    default = claim_name(models_dir, name, replace) or default
    source_dir = Path(source_models_dir or models_dir)
    src = load_registry(source_dir).get(source)
    if src is None:
        raise KeyError(f"model {source!r} is not in {source_dir}/registry.json")
    src_path = source_dir / src.file
    source_graph = onnx.load(str(src_path))
    requantized = is_quantized(source_graph)
    if requantized and version in (None, src.version):
        raise ValueError(f"{source} is already int8: give its requantized file a new --version")
    # What the int8 file came from (its float32 source), not the int8 file itself.
    origin = src.training.get("quantized_from", source).split()[0] if requantized else source
    spec = src.input.spec()
    input_name = cpu_session(src_path).get_inputs()[0].name

    train, fingerprint = load_split(data, "train")
    pick = np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_FACES]
    x = prepare_batch(train.x[pick], spec)
    batches = [x[i : i + 64] for i in range(0, len(x), 64)]

    out = models_dir / f"{name}.onnx"
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if requantized:  # an int8 file whose float32 source is gone: start from its weights
            src_path = Path(tmp) / "float.onnx"
            onnx.save(dequantize(source_graph), str(src_path))
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(Path(tmp) / "q.onnx"),
            _calibration_reader(batches, input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,  # WEIGHT_BITS: see the module docstring
            nodes_to_exclude=_head_nodes(pre),
        )
        if largest_int8_weight(onnx.load(str(Path(tmp) / "q.onnx"))) > 2 ** (WEIGHT_BITS - 1):
            raise RuntimeError(
                f"weights beyond {WEIGHT_BITS} bits: onnxruntime's reduce_range changed"
            )
        test, test_fp = load_split(data, "test")
        probs = predict_onnx_file(Path(tmp) / "q.onnx", src, test.x)
        accuracy = float(np.mean(probs.argmax(1) == test.y))
        drop = src.metrics.get("accuracy", accuracy) - accuracy
        if drop > max_drop:
            raise RuntimeError(
                f"int8 model loses {drop:.4f} accuracy (> {max_drop}); not registered"
            )
        Path(tmp, "q.onnx").replace(out)

    metrics = write_evaluation(
        Path(reports_dir) / name,
        f"{name} (int8)",
        test.y,
        probs,
        extra={"model": name, "test_data_fingerprint": test_fp, "runtime": "onnxruntime int8"},
    )
    for f in ("learning_curves.png", "history.csv", "config.json", "cascade.png"):
        src_report = Path(reports_dir) / source / f
        if src_report.exists():
            (Path(reports_dir) / name / f).write_bytes(src_report.read_bytes())
    entry = src.model_copy(
        update={
            "name": name,
            "version": version or src.version,
            "file": out.name,
            "sha256": sha256_file(out),
            "default": default,
            "description": f"{_INT8_CLAUSE.sub('', src.description)}; int8 (static QDQ, "
            f"per-channel, {WEIGHT_BITS}-bit weights) quantization of {origin}",
            # No temperature is refitted: the source's is already inside the graph.
            "metrics": {k: metrics[k] for k in (*HEADLINE_KEYS, "ece_before", "ece_after")}
            | {"dataset": src.metrics.get("dataset")},
            "training": src.training
            | {
                "quantized_from": src.training.get("quantized_from", f"{source} {src.version}")
                if requantized
                else f"{source} {src.version} ({src.sha256[:12]})",
                "quantization": f"onnxruntime static QDQ, uint8 activations, {WEIGHT_BITS}-bit per-channel weights, "
                f"{len(x)} calibration faces from train/ ({fingerprint})"
                + (
                    f"; requantized from {source} {src.version} ({src.sha256[:12]})"
                    if requantized
                    else ""
                ),
                "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        }
    )
    upsert(models_dir, entry)
    print(
        f"{name}: accuracy {accuracy:.4f} (source {source}: {src.metrics.get('accuracy', float('nan')):.4f}), "
        f"{out.stat().st_size / 1e6:.2f} MB"
    )
    return entry

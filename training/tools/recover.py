"""Turn the members of a registered ONNX model (float32 or int8) back into training runs.

Run folders stay on the machine that trained them; what ships, and so what a later session or
another data scientist has, is the ONNX file in `models/` and its registry entry. Recovering
its members as runs lets them join a new ensemble (`ensemble`), be scored (`evaluate`) or seed
a longer training (`train --init-from`) without training them again.

Export folds each batch norm into the convolution (or dense layer) before it, so the recovered
network gets the folded kernels and batch norms that reproduce them exactly in inference. Their
moving statistics are set to the statistics of the layer's output on training faces, so a
batch norm in training mode (batch statistics) starts out computing nearly the same function.
The recovered graph must reproduce the shipped file's probabilities, or nothing is written.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.preprocess import prepare_batch
from app.registry import load_registry
from training import architectures
from training.data import class_weights, recorded_split_seed
from training.dequantize import dequantize, is_quantized
from training.export import PARITY_FACES, PARITY_TOL
from training.onnx_nodes import data_inputs
from training.run_config import RunConfig, write_run_config
from training.split import VAL_FRACTION, split_train

if TYPE_CHECKING:
    import keras
    import onnx

CALIBRATION_FACES = 2048
_LOGITS_ADD = re.compile(r"/logits(_\d+)?/BiasAdd$")
# `serving_model` names member i's logits sub-model `logits_of_i` (`logits_of` when alone), and
# each call of it gets a `_N` suffix: "serving/logits_of_1_3/logits_1/BiasAdd" is member 1.
_MEMBER_INDEX = re.compile(r"/logits_of_(\d+)_\d+/")


@dataclass
class MemberWeights:
    """One member's weights as the ONNX graph holds them (convolutions in NCHW order)."""

    convs: list[tuple[np.ndarray, np.ndarray]]  # (kernel OIHW, bias) with batch norm folded in
    dense: tuple[np.ndarray, np.ndarray, np.ndarray]  # (kernel, scale, offset) of the BN head
    logits: tuple[np.ndarray, np.ndarray]  # (kernel, bias)


def float_graph(path: Path) -> tuple[onnx.ModelProto, bool]:
    """The exported graph, or for an int8 file its `dequantize`d float32 copy (its weights the
    int8 ones multiplied out, its logits layers fused `Gemm`s, and a `Clip` after each
    quantized activation); and whether the file was int8."""
    import onnx

    model = onnx.load(str(path))
    return (dequantize(model), True) if is_quantized(model) else (model, False)


def without_clipping(model: onnx.ModelProto) -> onnx.ModelProto:
    """A dequantized graph as its float32 source computed it: a `Clip` that stood for a ReLU
    folded into a uint8 activation keeps its zero floor and loses its ceiling, and any other
    `Clip` (an activation range reaching below zero) becomes the identity. What `recover`
    rebuilds has no int8 range limits, so this is the graph it must reproduce."""
    import onnx
    from onnx import numpy_helper

    result = onnx.ModelProto()
    result.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in result.graph.initializer}
    for node in result.graph.node:
        if node.op_type == "Clip" and len(node.input) == 3:
            node.input[2] = ""
            if float(inits[node.input[1]]) < 0:
                node.input[1] = ""
    return result


def read_members(model: onnx.ModelProto, path: Path) -> list[MemberWeights]:
    """Each member network of an exported graph, in the order of the ensemble's members.

    A member is everything upstream of one `logits` bias-add; mirror TTA and cascades run a
    member more than once, so the calls of one member count once. The order comes from the
    member's name, not the graph's node order, which tf2onnx does not keep. `path` names the
    file in errors.
    """
    from onnx import numpy_helper

    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    order = {id(n): i for i, n in enumerate(graph.node)}

    def upstream(node) -> list:
        seen, todo = {id(node): node}, [node]
        while todo:
            for name in data_inputs(todo.pop()):  # not a cascade's row indices
                up = producer.get(name)
                if up is not None and id(up) not in seen:
                    seen[id(up)] = up
                    todo.append(up)
        return sorted(seen.values(), key=lambda n: order[id(n)])

    def param(node, index: int) -> np.ndarray:
        return weights[node.input[index]]

    def next_op(node):
        """The node that takes `node`'s output, past the `Clip` of a quantized activation."""
        after = consumers[node.output[0]][0]
        return next_op(after) if after.op_type == "Clip" else after

    def is_head(node) -> bool:
        """A member's logits: `Add` of the bias, or (int8) `Gemm` fused with it."""
        if node.op_type == "Add":
            return bool(_LOGITS_ADD.search(node.name))
        return node.op_type == "Gemm" and bool(_LOGITS_ADD.search(node.output[0].split(":")[0]))

    members: dict[int, MemberWeights] = {}
    for head in filter(is_head, graph.node):
        nodes = upstream(head)
        convs = [(param(n, 1), param(n, 2)) for n in nodes if n.op_type == "Conv"]
        matmuls = [n for n in nodes if n.op_type == "MatMul"]
        if head.op_type == "Gemm":
            if any(a.name in ("transA", "transB") and a.i for a in head.attribute):
                raise RuntimeError(f"{path}: {head.name} is a transposed Gemm")
            matmuls.append(head)
        if len(matmuls) != 2 or not convs:
            raise RuntimeError(f"{path}: member of {head.name} is not a conv stack + dense head")
        dense, logits = matmuls
        mul = next_op(dense)
        add = next_op(mul)
        bias = param(head, 2) if head.op_type == "Gemm" else weights[head.input[1]]
        member = MemberWeights(
            convs,
            (param(dense, 1), weights[mul.input[1]], weights[add.input[1]]),
            (param(logits, 1), bias),
        )
        index = _MEMBER_INDEX.search(head.name)
        members.setdefault(int(index.group(1)) if index else 0, member)
    if not members:
        raise RuntimeError(f"{path} has no `logits` layer: not exported by this package")
    return [members[i] for i in sorted(members)]


def _matching_build(
    name: str, member: MemberWeights
) -> tuple[architectures.Architecture, keras.Model]:
    """A fresh build of architecture `name` (the member's recorded `--model`), checked to have
    this member's kernel shapes: emonet_deep and emonet_res share every convolution's shape
    and differ only in the dense layer's."""
    import keras

    shapes = [k.transpose(2, 3, 1, 0).shape for k, _ in member.convs] + [member.dense[0].shape]
    arch = architectures.get(name)
    model = arch.build(None)
    built = [tuple(c.kernel.shape) for c in _layers(model, keras.layers.Conv2D)]
    if built + [tuple(_layers(model, keras.layers.Dense)[0].kernel.shape)] != shapes:
        raise RuntimeError(f"the network recorded as {name} does not have {name}'s layers")
    return arch, model


def _layers(model, kind) -> list:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def fill(model: keras.Model, member: MemberWeights, faces: np.ndarray) -> None:
    """Load `member` into a fresh build of its architecture, batch norms as described above.

    Each batch norm must compute `scale * c + offset` of its input `c`; with moving mean `m`
    and variance `v` that takes gamma = scale * sqrt(v + eps) and beta = offset + scale * m.
    """
    import keras

    convs = _layers(model, keras.layers.Conv2D)
    norms = _layers(model, keras.layers.BatchNormalization)
    dense, logits = _layers(model, keras.layers.Dense)
    if len(convs) != len(member.convs) or len(norms) != len(convs) + 1:
        raise RuntimeError(f"{model.name} does not have this member's layers")
    targets = []  # (batch norm, its input layer, scale, offset)
    for conv, norm, (kernel, bias) in zip(convs, norms, member.convs, strict=False):
        conv.kernel.assign(kernel.transpose(2, 3, 1, 0))
        targets.append((norm, conv, np.ones_like(bias), bias))
    kernel, scale, offset = member.dense
    dense.kernel.assign(kernel)
    targets.append((norms[-1], dense, scale, offset))
    logits.kernel.assign(member.logits[0])
    logits.bias.assign(member.logits[1])

    # Every batch norm's input depends only on kernels and on earlier batch norms, so first make
    # each one exact with identity statistics, then read the inputs' statistics in one pass.
    for norm, _, scale, offset in targets:
        norm.set_weights(
            [scale, offset, np.zeros_like(scale), np.full_like(scale, 1 - norm.epsilon)]
        )
    probe = keras.Model(model.input, [layer.output for _, layer, _, _ in targets])
    outputs = probe.predict(faces, batch_size=256, verbose=0)
    for (norm, _, scale, offset), out in zip(targets, outputs, strict=True):
        axes = tuple(range(out.ndim - 1))
        mean = out.mean(axis=axes)
        var = np.maximum(out.var(axis=axes) - norm.epsilon, 0.0)
        gamma = scale * np.sqrt(var + norm.epsilon)
        norm.set_weights([gamma, offset + scale * mean, mean, var])


def _member_options(command: str):
    """The TrainOptions a member's recorded `python -m training train ...` command gave."""
    from training.train_args import parse_train_command

    words = shlex.split(command)
    if words[:4] != ["python", "-m", "training", "train"]:
        raise RuntimeError(f"not a training command: {command!r}")
    return parse_train_command(words[4:])


def recover(models_dir: str | Path, name: str, data: str | Path, out_dir: str | Path) -> list[Path]:
    """Write one run folder per member of registered model `name` under `out_dir`."""
    import keras
    import onnx

    from app.inference import cpu_session
    from training.graph import CascadeSpec, serving_model

    entry = load_registry(Path(models_dir)).get(name)
    if entry is None:
        raise KeyError(f"model {name!r} is not in {models_dir}/registry.json")
    path = Path(models_dir) / entry.file
    graph, int8 = float_graph(path)
    members = read_members(graph, path)
    info = entry.training
    commands = info.get("members") or [info["command"]]
    if len(commands) != len(members):
        raise RuntimeError(
            f"{path} holds {len(members)} networks but its entry records {len(commands)} commands"
        )
    cascade = CascadeSpec.from_dict(info.get("cascade"))
    keras.mixed_precision.set_global_policy("float32")
    shift = info.get("log_prior_shift")
    runs, models = [], []
    for member, command in zip(members, commands, strict=True):
        opts = _member_options(command)
        arch, model = _matching_build(opts.model, member)
        split_seed = recorded_split_seed(asdict(opts))
        train, _, fingerprint = split_train(data, opts.limit_per_class, split_seed, VAL_FRACTION)
        if fingerprint != info["data_fingerprint"]:
            raise RuntimeError(f"{data} is not the data {name} was trained on ({fingerprint})")
        pick = np.random.default_rng(0).permutation(len(train))[:CALIBRATION_FACES]
        faces = prepare_batch(train.x[pick], arch.input)
        fill(model, member, faces)
        if shift is not None:  # what the shipped graph corrects for: -log(class weight)
            weights = {str(i): math.exp(-s) for i, s in enumerate(shift)}
        elif opts.class_weights:
            weights = class_weights(train.y, arch.recipe.class_weight_power)
        else:
            weights = None
        run = Path(out_dir) / Path(opts.out).name
        runs.append((run, arch, opts, weights, command))
        models.append(model)

    rebuilt = serving_model(
        models,
        entry.temperature or 1.0,
        info.get("mirror_tta", False),
        shift,
        cascade,
    )
    faces = faces[:PARITY_FACES]
    with tempfile.TemporaryDirectory() as tmp:  # the float graph the members were read from
        onnx.save(without_clipping(graph) if int8 else graph, f"{tmp}/float.onnx")
        sess = cpu_session(Path(tmp) / "float.onnx")
        served = sess.run(None, {sess.get_inputs()[0].name: faces})[0]
    diff = float(np.max(np.abs(served - rebuilt.predict(faces, verbose=0))))
    if diff > PARITY_TOL:
        raise RuntimeError(f"recovered networks differ from {path} by {diff:.2e}; nothing written")

    for (run, arch, opts, weights, command), model in zip(runs, models, strict=True):
        if (run / "config.json").exists():
            raise FileExistsError(f"{run} already holds a run; choose another --out")
        run.mkdir(parents=True, exist_ok=True)
        model.save(run / "best.keras")
        config = RunConfig(
            model=arch.name,
            command=command,
            recovered_with="python -m training " + shlex.join(sys.argv[1:]),
            recovered_from=f"{name} {entry.version} ({entry.sha256[:12]})",
            options=asdict(opts),
            epochs=opts.epochs or arch.recipe.epochs,
            input=asdict(arch.input),
            class_weights=weights,
            data_fingerprint=info["data_fingerprint"],
            val_fraction=VAL_FRACTION,
        )
        write_run_config(run, config)
        print(f"{run}: {arch.name} from {name} {entry.version}")
    print(f"recovered {len(runs)} network(s); largest probability difference {diff:.2e}")
    return [r[0] for r in runs]

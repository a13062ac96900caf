"""Turn a QDQ-quantized ONNX graph back into a float32 one, so it can be quantized again.

Only the int8 file of a model ships; its float32 source often stays on the machine that
trained it. When the quantization itself has to change, the int8 file is all there is: its
weights, multiplied out by their scales, are a float32 network that `quantize` can take as a
source. Its weights carry the int8 rounding, which a second quantization with a coarser or
equal grid barely changes.

Weight dequantization (a `DequantizeLinear` of an initializer) becomes a float initializer.
Activation quantization (`QuantizeLinear` then `DequantizeLinear`) becomes the `Clip` to the
range it can represent: the quantizer folds a ReLU into a uint8 activation whose range starts
at zero, so dropping the pair would drop the ReLU too.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_QDQ = {"QuantizeLinear", "DequantizeLinear"}


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(node.op_type in _QDQ for node in model.graph.node)


def largest_int8_weight(model: onnx.ModelProto) -> int:
    """The largest magnitude among the int8 weights (64 with 7-bit weights, 127 with 8)."""
    inits = {t.name: t for t in model.graph.initializer}
    return max(
        (
            int(np.abs(numpy_helper.to_array(inits[n.input[0]]).astype(np.int32)).max())
            for n in model.graph.node
            if n.op_type == "DequantizeLinear"
            and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8
        ),
        default=0,
    )


def _scale_and_zero(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], zero_dtype: type = np.uint8
) -> tuple[np.ndarray, np.ndarray]:
    """A Q or DQ node's scale (float32) and zero point (its own type; `zero_dtype` if absent)."""
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    has_zero = len(node.input) > 2 and node.input[2]
    zero = numpy_helper.to_array(inits[node.input[2]]) if has_zero else np.zeros((), zero_dtype)
    return scale, zero


def _dequantized_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    scale, zero = _scale_and_zero(node, inits, np.int8)
    zero = zero.astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:  # per channel, along `axis`
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if zero.size > 1 else zero
    return (q - zero) * scale


def _representable(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]):
    """The float range [low, high] that an activation `QuantizeLinear` can represent."""
    scale, zero = _scale_and_zero(node, inits)
    if scale.size != 1:
        raise ValueError(f"{node.name}: per-channel activation quantization is not supported")
    info = np.iinfo(zero.dtype)
    low, high = ((np.float32(q) - zero.astype(np.float32)) * scale for q in (info.min, info.max))
    return low.reshape(()), high.reshape(())


def dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of `model` with every quantize / dequantize step taken out."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    inits = {t.name: t for t in graph.initializer}
    source: dict[str, str] = {}  # output of a removed activation Q or DQ -> what it stood for
    weights: list[onnx.TensorProto] = []
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type.startswith("QLinear") or node.op_type.startswith("ConvInteger"):
            raise ValueError(f"{node.op_type}: only QDQ graphs can be dequantized")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            weight = _dequantized_weight(node, inits)
            weights.append(numpy_helper.from_array(weight, node.output[0]))
        elif node.op_type == "QuantizeLinear":
            low, high = _representable(node, inits)
            names = [f"{node.output[0]}_low", f"{node.output[0]}_high"]
            weights += [
                numpy_helper.from_array(v, n) for v, n in zip((low, high), names, strict=True)
            ]
            clipped = f"{node.output[0]}_clipped"
            kept.append(helper.make_node("Clip", [node.input[0], *names], [clipped], node.name))
            source[node.output[0]] = clipped
        elif node.op_type == "DequantizeLinear":
            source[node.output[0]] = source.get(node.input[0], node.input[0])
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = source.get(name, name)
    for out in graph.output:  # a graph output must keep its name
        if out.name in source:
            kept.append(helper.make_node("Identity", [source[out.name]], [out.name]))
    used = {name for node in kept for name in node.input}
    floats = [t for t in (*graph.initializer, *weights) if t.name in used]
    # A new graph (copies of what it is given), without the shapes of the removed tensors.
    new = helper.make_graph(kept, graph.name, graph.input, graph.output, floats, graph.doc_string)
    graph.CopyFrom(new)
    onnx.checker.check_model(result)
    return result

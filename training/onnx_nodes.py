"""Walking exported ONNX graphs: which inputs of a node carry data, not row indices.

A cascade's later stages take their faces by indices computed from earlier logits. For
deciding what is downstream of the logits (kept float by `quantize`) or upstream of a member
(read back by `recover`), only data inputs count.
"""

from __future__ import annotations

_INDEX_INPUTS = {"Gather": {1}, "GatherElements": {1}, "GatherND": {1}, "ScatterND": {1}}


def data_inputs(node) -> list[str]:
    """The node's inputs except those that only say which rows to take or write."""
    skip = _INDEX_INPUTS.get(node.op_type, set())
    return [t for i, t in enumerate(node.input) if i not in skip]

"""ONNX shape inference into an onnx-ir model, in place.

Rule, as onnx-ir's ``ShapeInferencePass`` (types checked, strict mode, data propagation; a
model the inference rejects is left as it was): every value to which the inference gives a
shape or an element type it did not have takes it, and an initializer without a declared
shape or type takes its tensor's. The inference runs on the weightless skeleton (large
weights as typed inputs) and only the inferred value infos are read back, not a whole model
deserialised and paired with this one. A model with subgraphs goes through onnx-ir's pass,
which pairs values graph by graph (a name may repeat in another graph).
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxprune.skeleton import skeleton


def infer_shapes(model: ir.Model) -> bool:
    """Infer shapes and types of ``model``'s values in place; True if any changed."""
    graph = model.graph
    if next(iter(graph.subgraphs()), None) is not None:
        return ShapeInferencePass()(model).modified
    modified = False
    values: dict[str, ir.Value] = {}
    for value in graph.initializers.values():
        values[value.name] = value
        tensor = value.const_value
        if tensor is not None and (value.shape is None or value.dtype is None):
            value.shape = value.shape or tensor.shape
            value.dtype = value.dtype or tensor.dtype
            modified = True
    values.update((v.name, v) for v in graph.inputs)
    values.update((v.name, v) for node in graph for v in node.outputs if v is not None)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            skeleton(model, as_inputs=True), check_type=True, strict_mode=True, data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises several types; rejected means unchanged
        return modified
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        value = values.get(info.name)
        if value is None:
            continue
        shape = ir.serde.deserialize_type_proto_for_shape(info.type)
        if shape is not None and value.shape != shape:
            value.shape = shape
            modified = True
        dtype = ir.serde.deserialize_type_proto_for_type(info.type).dtype
        if dtype is not None and value.dtype != dtype:
            value.dtype = dtype
            modified = True
    return modified

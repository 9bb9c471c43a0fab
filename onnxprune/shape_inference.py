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

from onnxprune.skeleton import left_out, skeleton, weightless


def infer_proto(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """ONNX shape inference as ``infer_shapes`` runs it (types checked, strict, data
    propagation) on ``proto`` with its large or data-less initializers as typed inputs; None
    where the inference rejects the model."""
    try:
        return onnx.shape_inference.infer_shapes(
            weightless(proto, left_out), check_type=True, strict_mode=True, data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises several types; rejected means no result
        return None


def infer_shapes(model: ir.Model, inferred: onnx.ModelProto | None = None) -> bool:
    """Infer shapes and types of ``model``'s values in place; True if any changed.
    ``inferred``: ``infer_proto`` of the proto ``model`` was read from and still is
    (``model_io.LOADED_INFERENCE``), read back instead of inferring on a skeleton."""
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
    if inferred is None:
        inferred = infer_proto(skeleton(model))  # its stubs are what infer_proto leaves out
        if inferred is None:  # rejected: unchanged
            return modified
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        value = values.get(info.name)
        if value is None or _agrees(info.type, value):
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


def _agrees(inferred: onnx.TypeProto, value: ir.Value) -> bool:
    """True where an inferred tensor type says what ``value`` already has (read without
    deserialising: most values of a loaded model agree)."""
    if not inferred.HasField("tensor_type") or value.shape is None or value.dtype is None:
        return False
    tensor = inferred.tensor_type
    if tensor.elem_type and tensor.elem_type != value.dtype.value:
        return False
    if not tensor.HasField("shape"):
        return True
    dims = tensor.shape.dim
    return len(dims) == len(value.shape) and all(
        (d.dim_value if d.HasField("dim_value") else d.dim_param or None)
        == (v if isinstance(v, int) else v.value) for d, v in zip(dims, value.shape, strict=True))  # fmt: skip

"""Fold shape arithmetic whose result is static into initializers.

Exporters compute sizes at run time even when they are static (TorchScript's
``x.view(b, g, c // g, h, w)`` becomes Shape -> Gather -> Div -> Concat -> Reshape). A node
with integer outputs is folded when every input is a small constant (evaluated by onnx's
reference runtime), or when it is shape plumbing (Shape, Gather, Slice, Concat, Unsqueeze, Squeeze, Cast, Identity)
whose every element is a static size. Sizes of symbolic axes (a dynamic batch) stay
computed. A folded size becomes a literal the shrink pass can rewrite. Float computations on
weights are never folded: that would untie weights that are shared on purpose.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes import InPlacePass, PassResult

from onnxprune.shape_values import SHAPE_ARITHMETIC, Literal, SizeOf, shape_entries

MAX_FOLD_ELEMENTS = 4096
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli", "Dropout"}


def _static_entries(value: ir.Value, sizes: dict[str, ir.Value]) -> np.ndarray | None:
    if value.dtype is None or not value.dtype.is_integer():
        return None
    entries = shape_entries(value)
    if not entries:
        return None
    out = []
    for entry in entries:
        if isinstance(entry, Literal):
            out.append(entry.value)
        elif isinstance(entry, SizeOf):
            source = sizes.get(entry.tensor)
            size = None if source is None or source.shape is None else source.shape[entry.axis]
            if not isinstance(size, int):
                return None
            out.append(size)
        else:
            return None
    array = np.array(out, dtype=value.dtype.numpy())
    if value.shape is not None and len(value.shape) == 0 and array.size == 1:
        array = array.reshape(())
    return array


def _evaluate(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    inputs = []
    names = []
    for i, value in enumerate(node.inputs):
        if value is None:
            names.append("")
            continue
        array = value.const_value.numpy()
        names.append(f"i{i}")
        inputs.append(onnx.numpy_helper.from_array(array, f"i{i}"))
    proto_node = onnx.helper.make_node(
        node.op_type, names, [f"o{k}" for k in range(len(node.outputs))],
        **{name: attr.value if not isinstance(attr.value, ir.TensorProtocol)
           else onnx.numpy_helper.from_array(attr.value.numpy())
           for name, attr in node.attributes.items()},
    )
    graph = onnx.helper.make_graph(
        [proto_node], "fold", [],
        [onnx.helper.make_tensor_value_info(f"o{k}", 0, None) for k in range(len(node.outputs))],
        initializer=inputs,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        return list(ReferenceEvaluator(model).run(None, {}))
    except Exception:  # an op the reference runtime cannot evaluate stays unfolded
        return None


class FoldShapeConstantsPass(InPlacePass):
    """Replace statically known shape computations and small constant subgraphs by values."""

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 17)
        outputs = {id(v) for v in graph.outputs}
        sizes: dict[str, ir.Value] = {v.name: v for v in graph.inputs}
        for node in graph:
            for v in node.outputs:
                if v is not None:
                    sizes[v.name] = v
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC:
                continue
            if any(id(v) in outputs for v in node.outputs) or node.op_type == "Constant":
                continue
            arrays = None
            present = [v for v in node.inputs if v is not None]
            integer_out = all(
                v.dtype is not None and v.dtype.is_integer() for v in node.outputs if v is not None
            )
            if not integer_out:
                continue
            if present and all(v.const_value is not None for v in present) and sum(
                v.const_value.size for v in present
            ) <= MAX_FOLD_ELEMENTS:
                arrays = _evaluate(node, opset)
            elif node.op_type in SHAPE_ARITHMETIC and len(node.outputs) == 1:
                folded = _static_entries(node.outputs[0], sizes)
                arrays = None if folded is None else [folded]
            if arrays is None or any(a is None or a.size > MAX_FOLD_ELEMENTS for a in arrays):
                continue
            for value, array in zip(node.outputs, arrays, strict=True):
                const = ir.Value(name=f"{value.name}__folded", shape=ir.Shape(array.shape),
                                 type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
                const.const_value = ir.Tensor(np.asarray(array), name=const.name)
                graph.register_initializer(const)
                value.replace_all_uses_with(const)
            graph.remove(node, safe=True)
            modified = True
        return PassResult(model, modified)

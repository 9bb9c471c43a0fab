"""Fill in Reshape output sizes that ONNX shape inference leaves unknown.

With a symbolic batch, ONNX cannot infer the ``-1`` of ``Reshape(x, [N, -1])``. The target
entries say what each output axis is: a literal, 0 (copy input axis), the size of some
tensor's axis (``SizeOf``), or -1; symbolic sizes cancel between input and output, so the -1
is the quotient of the static parts. Refined shapes are written back and shape inference is
run again so that they reach downstream nodes.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxprune.graph_values import all_values
from onnxprune.shape_values import Literal, SizeOf, shape_entries


def _refined(node: ir.Node, values: dict[str, ir.Value]) -> list | None:
    x, target, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if x is None or x.shape is None or y.shape is None:
        return None
    entries = shape_entries(target)
    if entries is None or len(entries) != len(y.shape):
        return None
    out: list = []
    for axis, entry in enumerate(entries):
        if isinstance(entry, Literal) and entry.value > 0:
            out.append(entry.value)
        elif isinstance(entry, Literal) and entry.value == 0 and axis < len(x.shape):
            out.append(x.shape[axis])
        elif isinstance(entry, SizeOf) and entry.tensor in values:
            shape = values[entry.tensor].shape
            out.append(shape[entry.axis] if shape is not None else None)
        elif isinstance(entry, Literal) and entry.value == -1:
            out.append(-1)
        else:
            out.append(None)
    if None in out or out.count(-1) > 1:
        return None
    if -1 in out:
        inner = [d for d in x.shape if not isinstance(d, int)]
        outer = [d for d in out if not isinstance(d, int)]
        if sorted(map(str, inner)) != sorted(map(str, outer)):
            return None
        known_in = math.prod(d for d in x.shape if isinstance(d, int))
        known_out = math.prod(d for d in out if isinstance(d, int) and d != -1)
        if known_out == 0 or known_in % known_out:
            return None
        out[out.index(-1)] = known_in // known_out
    return out


def _known(dim: int | ir.SymbolicDim) -> bool:
    """An int, or a named symbol that is not one ONNX inference made up (``unk__N``)."""
    return isinstance(dim, int) or bool(dim.value and not str(dim.value).startswith("unk__"))


def refine_reshape_shapes(model: ir.Model) -> bool:
    """Complete unknown Reshape output dims from their targets; True if any changed."""
    values = all_values(model.graph)
    changed = False
    for node in model.graph:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
            continue
        y = node.outputs[0]
        if y.shape is not None and all(_known(d) for d in y.shape):
            continue
        refined = _refined(node, values)
        if refined is not None:
            y.shape = ir.Shape(refined)
            changed = True
    if changed:
        ShapeInferencePass()(model)
    return changed

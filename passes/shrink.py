"""Shrink the model to a removal plan.

Every initializer listed in the plan is sliced to its kept positions; static shapes of the
shrunk activations are updated; and the values that carry sizes are rewritten: Conv
``group`` (new input channels / new weight in-channels), literal entries of Reshape, Expand,
ConstantOfShape and Resize shape inputs (set to the new size of the axis they produce),
Split sizes (the new sizes of its outputs) and Slice bounds (counted in kept positions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from onnxprune.errors import UnsupportedModelError
from onnxprune.graph_values import all_values, analysed_nodes
from onnxprune.plan import RemovalPlan
from onnxprune.shape_values import Broadcast, Literal, int_vector, shape_entries
from onnxprune.weights import sliced


class _Writer:
    """Collects writes to integer initializers and applies them once, detecting conflicts."""

    def __init__(self, values: dict[str, ir.Value]) -> None:
        self.values = values
        self.writes: dict[tuple[str, int], int] = {}

    def set(self, literal: Literal, new: int, node: ir.Node) -> None:
        key = (literal.tensor, literal.index)
        if self.writes.get(key, new) != new:
            raise UnsupportedModelError(
                f"shape constant '{literal.tensor}' is shared by readers that need different "
                f"sizes (at node '{node.name}'); exclude one of the groups with --exclude"
            )
        self.writes[key] = new

    def apply(self) -> None:
        by_tensor: dict[str, list[tuple[int, int]]] = {}
        for (tensor, index), new in self.writes.items():
            by_tensor.setdefault(tensor, []).append((index, new))
        for tensor, edits in by_tensor.items():
            value = self.values[tensor]
            array = value.const_value.numpy().copy()
            for index, new in edits:
                array.reshape(-1)[index] = new
            value.const_value = ir.Tensor(array, name=tensor)


def _replace_input(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, tag: str) -> None:
    """A new int initializer as input ``index``, in the dtype of the input it replaces (Slice
    wants starts/ends/axes of one type; tf2onnx writes int32)."""
    name = f"{node.name}_{tag}"
    old = node.inputs[index] if index < len(node.inputs) else None
    dtype = old.dtype if old is not None and old.dtype is not None else ir.DataType.INT64
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(dtype))
    value.const_value = ir.Tensor(array.astype(dtype.numpy()), name=name)
    graph.register_initializer(value)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)


Rewriter = Callable[[ir.Node, "ShrinkPass"], None]
REWRITERS: dict[tuple[str, str], Rewriter] = {}


def rewriter(*op_types: str, domain: str = "") -> Callable[[Rewriter], Rewriter]:
    def register(fn: Rewriter) -> Rewriter:
        for op in op_types:
            if (domain, op) in REWRITERS:
                raise ValueError(f"shrink rewriter for '{domain}::{op}' registered twice")
            REWRITERS[(domain, op)] = fn
        return fn

    return register


class ShrinkPass(InPlacePass):
    """Slice tensors to the plan's kept positions and rewrite the sizes that depend on them."""

    def __init__(self, plan: RemovalPlan) -> None:
        super().__init__()
        self.plan = plan

    def old_size(self, value: ir.Value, axis: int) -> int | None:
        if value.shape is None:
            return None
        size = value.shape[axis]
        return size if isinstance(size, int) else None

    def new_size(self, value: ir.Value, axis: int) -> int | None:
        old = self.old_size(value, axis)
        axis = axis % len(value.shape) if value.shape is not None else axis
        return self.plan.new_size(value.name, axis, old)

    def call(self, model: ir.Model) -> PassResult:
        if not self.plan:
            return PassResult(model, False)
        self.graph = model.graph
        self.values = all_values(model.graph)
        self.writer = _Writer(self.values)
        self.kept = self.plan.by_tensor()  # tensor -> {axis: kept positions}, built once
        for node in analysed_nodes(model.graph):
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            rewrite = REWRITERS.get((domain, node.op_type))
            if rewrite is not None:
                rewrite(node, self)
        self.writer.apply()
        for tensor, axes in self.kept.items():
            value = self.values.get(tensor)
            if value is None:
                continue
            if value.const_value is not None:  # mapped weights are sliced when read
                value.const_value = sliced(value.const_value, axes, tensor)
            if value.shape is not None:
                dims = list(value.shape)
                for axis, kept in axes.items():
                    dims[axis] = int(kept.size)
                value.shape = ir.Shape(dims)
        return PassResult(model, True)


@rewriter("Conv")
def _conv(node: ir.Node, shrink: ShrinkPass) -> None:
    """group = new input channels / new weight in-channels."""
    group = node.attributes.get("group")
    if group is None or group.value == 1:
        return
    cin = shrink.new_size(node.inputs[0], 1)
    w_in = shrink.new_size(node.inputs[1], 1)
    if cin is None or w_in is None or cin % w_in:
        raise UnsupportedModelError(f"cannot recompute `group` of Conv '{node.name}'")
    node.attributes["group"] = ir.AttrInt64("group", cin // w_in)


@rewriter("LSTM", "GRU", "RNN")
def _recurrent(node: ir.Node, shrink: ShrinkPass) -> None:
    """hidden_size = new width of R's last axis (the recurrent read of every unit)."""
    new = shrink.new_size(node.inputs[2], 2)
    if isinstance(new, int) and new != node.attributes["hidden_size"].value:
        node.attributes["hidden_size"] = ir.AttrInt64("hidden_size", new)


@rewriter("Attention", "MultiHeadAttention", "GroupQueryAttention", domain="com.microsoft")
def _attention_heads(node: ir.Node, shrink: ShrinkPass) -> None:
    """num_heads (and kv_num_heads) = new width of the output / head size."""
    y = node.outputs[0]
    old, new = shrink.old_size(y, -1), shrink.new_size(y, -1)
    if old is None or new is None or old == new:
        return
    for name in ("num_heads", "kv_num_heads"):
        attr = node.attributes.get(name)
        if attr is None:
            continue
        if name == "kv_num_heads":
            heads = node.attributes["num_heads"].value
            kept = attr.value * new // old
            if kept * old != attr.value * new or heads % attr.value:
                raise UnsupportedModelError(f"cannot recompute kv_num_heads of '{node.name}'")
        else:
            kept = attr.value * new // old
            if kept * old != attr.value * new:
                raise UnsupportedModelError(f"cannot recompute num_heads of '{node.name}'")
        node.attributes[name] = ir.AttrInt64(name, kept)


def _rewrite_shape_input(node: ir.Node, shrink: ShrinkPass, index: int, out: ir.Value) -> None:
    """Literal entry k > 0 of a shape input (or the literals of a ``Broadcast`` entry)
    becomes the new size of output axis k."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return
    entries = shape_entries(node.inputs[index]) or []
    if out.shape is None or len(entries) != len(out.shape):
        return
    for axis, entry in enumerate(entries):
        literals = entry.literals if isinstance(entry, Broadcast) else (entry,)
        for literal in literals:
            if not isinstance(literal, Literal) or literal.value <= 0:
                continue
            old, new = shrink.old_size(out, axis), shrink.new_size(out, axis)
            if old is not None and new != old:
                if literal.value != old:
                    raise UnsupportedModelError(
                        f"{node.op_type} '{node.name}' sets axis {axis} to {literal.value} but "
                        f"the axis has size {old}; cannot rewrite it"
                    )
                shrink.writer.set(literal, new, node)


@rewriter("Reshape", "Expand")
def _reshape(node: ir.Node, shrink: ShrinkPass) -> None:
    _rewrite_shape_input(node, shrink, 1, node.outputs[0])


@rewriter("ConstantOfShape")
def _constant_of_shape(node: ir.Node, shrink: ShrinkPass) -> None:
    _rewrite_shape_input(node, shrink, 0, node.outputs[0])


@rewriter("Resize")
def _resize(node: ir.Node, shrink: ShrinkPass) -> None:
    _rewrite_shape_input(node, shrink, 3, node.outputs[0])


@rewriter("Split")
def _split(node: ir.Node, shrink: ShrinkPass) -> None:
    """Explicit split sizes = the new sizes of the outputs along ``axis``."""
    x = node.inputs[0]
    axis = node.attributes["axis"].value if "axis" in node.attributes else 0
    axis %= len(x.shape)
    old = [shrink.old_size(y, axis) for y in node.outputs]
    new = [shrink.new_size(y, axis) for y in node.outputs]
    if old == new:
        return
    sizes = np.array(new, dtype=np.int64)
    if "split" in node.attributes:
        node.attributes["split"] = ir.AttrInt64s("split", sizes.tolist())
        return
    node.attributes.pop("num_outputs", None)
    if int_vector(node.inputs[1] if len(node.inputs) > 1 else None) is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        raise UnsupportedModelError(f"Split '{node.name}' sizes are computed at run time")
    if shrink.graph.opset_imports.get("", 13) < 13:
        node.attributes["split"] = ir.AttrInt64s("split", sizes.tolist())
        return
    _replace_input(shrink.graph, node, 1, sizes, "split")


@rewriter("Slice")
def _slice(node: ir.Node, shrink: ShrinkPass) -> None:
    """Bounds on a shrunk axis count kept positions: start' = #kept < start."""
    x = node.inputs[0]
    kept_axes = shrink.kept.get(x.name, {})
    if not kept_axes:
        return
    rank = len(x.shape)
    starts = int_vector(node.inputs[1])
    ends = int_vector(node.inputs[2])
    axes = int_vector(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    axes = [a % rank for a in axes] if axes is not None else list(range(len(starts)))
    new_starts, new_ends = list(starts), list(ends)
    changed = False
    for i, axis in enumerate(axes):
        if axis not in kept_axes:
            continue
        size = shrink.old_size(x, axis)
        lo = min(max(starts[i] + size if starts[i] < 0 else starts[i], 0), size)
        hi = min(max(ends[i] + size if ends[i] < 0 else ends[i], 0), size)
        kept = kept_axes[axis]
        new_starts[i] = int(np.count_nonzero(kept < lo))
        new_ends[i] = int(np.count_nonzero(kept < hi))
        changed = True
    if changed:
        _replace_input(shrink.graph, node, 1, np.array(new_starts), "starts")
        _replace_input(shrink.graph, node, 2, np.array(new_ends), "ends")

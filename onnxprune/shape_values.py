"""Reading constant tensors and the int64 shape vectors that Reshape, Expand, Tile, Resize
and ConstantOfShape take as inputs.

A shape vector is resolved to a list of :class:`Entry` values, one per element:
``Literal`` (a number stored in an initializer at a known position, so a pass can rewrite it),
``SizeOf`` (the run-time size of some tensor's axis, read through ``Shape``) or ``Unknown``
(computed in a way we do not follow). Only Shape/Gather/Slice/Concat/Unsqueeze/Squeeze/Cast/
Identity are followed; anything else gives ``Unknown`` and rules block what depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

SHAPE_ARITHMETIC = {"Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Identity"}


@dataclass(frozen=True)
class Literal:
    """A constant element: ``value``, stored at flat index ``index`` of initializer ``tensor``."""

    value: int
    tensor: str
    index: int


@dataclass(frozen=True)
class SizeOf:
    """The run-time size of axis ``axis`` of tensor ``tensor``."""

    tensor: str
    axis: int


@dataclass(frozen=True)
class Unknown:
    """An element computed by an op we do not follow (``why`` names it)."""

    why: str


Entry = Literal | SizeOf | Unknown


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value of an initializer (or lifted Constant), else None. Reads the data."""
    if value is None:
        return None
    tensor = value.const_value
    if tensor is None:
        producer = value.producer()
        if producer is not None and producer.op_type == "Constant" and producer.domain == "":
            return _constant_node_array(producer)
        return None
    return tensor.numpy()


def _constant_node_array(node: ir.Node) -> np.ndarray | None:
    for name, attr in node.attributes.items():
        if name == "value":
            return attr.value.numpy()
        if name in ("value_int", "value_float"):
            return np.array(attr.value)
        if name in ("value_ints", "value_floats"):
            return np.array(list(attr.value))
    return None


def int_vector(value: ir.Value | None) -> list[int] | None:
    """A constant integer vector (or scalar as a 1-element list), else None."""
    array = constant_array(value)
    if array is None or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in array.reshape(-1)]


def shape_entries(value: ir.Value | None, depth: int = 0) -> list[Entry] | None:
    """Resolve a 1-D int64 shape vector into entries, or None when even its length is unknown."""
    if value is None or depth > 32:
        return None
    if value.const_value is not None and value.is_initializer():
        array = value.const_value.numpy().reshape(-1)
        return [Literal(int(v), value.name, i) for i, v in enumerate(array)]
    producer = value.producer()
    if producer is None:
        return None
    op = producer.op_type if producer.domain == "" else f"{producer.domain}.{producer.op_type}"
    if op == "Constant":
        array = constant_array(value)
        if array is None:
            return None
        # A Constant node cannot be rewritten in place by name; report it as unknown literal
        # positions. Loading lifts Constant nodes to initializers, so this is rare.
        return [Unknown(f"Constant node '{producer.name}'") for _ in array.reshape(-1)]
    if op == "Shape":
        return _shape_of(producer)
    if op in ("Cast", "Identity"):
        return shape_entries(producer.inputs[0], depth + 1)
    if op in ("Unsqueeze", "Squeeze"):
        inner = shape_entries(producer.inputs[0], depth + 1)
        return inner
    if op == "Concat":
        parts: list[Entry] = []
        for inp in producer.inputs:
            sub = shape_entries(inp, depth + 1)
            if sub is None:
                return None
            parts.extend(sub)
        return parts
    if op == "Gather":
        source = shape_entries(producer.inputs[0], depth + 1)
        indices = int_vector(producer.inputs[1])
        if source is None or indices is None:
            return None
        n = len(source)
        return [source[i % n] if -n <= i < n else Unknown("Gather index") for i in indices]
    if op == "Slice":
        return _slice_entries(producer, depth)
    shape = value.shape
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
        return [Unknown(f"{op} node '{producer.name}'")] * shape[0]
    return None


def _shape_of(node: ir.Node) -> list[Entry] | None:
    data = node.inputs[0]
    if data is None or data.shape is None:
        return None
    rank = len(data.shape)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    lo = start.value if start is not None else 0
    hi = end.value if end is not None else rank
    axes = range(rank)[slice(lo, hi)]
    return [SizeOf(data.name, axis) for axis in axes]


def _slice_entries(node: ir.Node, depth: int) -> list[Entry] | None:
    source = shape_entries(node.inputs[0], depth + 1)
    if source is None:
        return None
    starts = int_vector(node.inputs[1]) if len(node.inputs) > 1 else None
    ends = int_vector(node.inputs[2]) if len(node.inputs) > 2 else None
    steps = int_vector(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else [1]
    if starts is None or ends is None or steps is None:
        return None
    return source[slice(starts[0], ends[0], steps[0])]

"""Reading constant tensors and the int64 shape vectors that Reshape, Expand, Tile, Resize
and ConstantOfShape take as inputs.

A shape vector is resolved to a list of :class:`Entry` values, one per element:
``Literal`` (a number stored in an initializer at a known position, so a pass can rewrite it),
``SizeOf`` (the run-time size of some tensor's axis, read through ``Shape``), ``Scaled``
(such a size times a constant, TorchScript's ``x.reshape(b, kv * n_rep, s, d)``),
``SizeProduct`` (several sizes multiplied: ``ReduceProd`` over a shape slice, tf2onnx's
einsum lowering merging batch axes), ``Broadcast`` (``Max`` of sizes that broadcast
together: each is the result or 1) or ``Unknown`` (computed in a way we do not follow).
Followed: Shape/Gather/Slice/Concat/Unsqueeze/Squeeze/Cast/Identity, a 1-D Reshape of a
shape vector, Mul by a constant, ReduceProd over a whole vector, elementwise Max, and
TorchScript's ``Where(Equal(s, -1), ones, s)`` guard (sizes are never -1, so it is ``s``);
anything else gives ``Unknown`` and rules block what depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxprune.graph_values import dim_value

SHAPE_ARITHMETIC = {"Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Identity"}
#: Ops that combine sizes into vectors; followed where their output is a vector or scalar.
SIZE_COMBINERS = {"ReduceProd", "Max"}


@dataclass(frozen=True)
class Literal:
    """A constant element: ``value``, stored at flat index ``index`` of initializer ``tensor``."""

    value: int
    tensor: str
    index: int


@dataclass(frozen=True)
class SizeOf:
    """The run-time size of axis ``axis`` of tensor ``tensor``; ``static`` is its size in the
    inferred shape (an int, a symbol, or None), not part of its identity."""

    tensor: str
    axis: int
    static: int | str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Unknown:
    """An element computed by an op we do not follow (``why`` names it)."""

    why: str


@dataclass(frozen=True)
class Scaled:
    """``size`` times the constant ``factor``."""

    size: SizeOf
    factor: int


@dataclass(frozen=True)
class SizeProduct:
    """The product of ``sizes`` (two or more), outermost first."""

    sizes: tuple[SizeOf, ...]


@dataclass(frozen=True)
class Broadcast:
    """The largest of ``sizes`` and ``literals`` (none of them 1), which broadcast together:
    at run time each size is the result or 1; the literals equal the sizes' static value (a
    shape the folding pass made constant on one side), so a pass rewrites them with the axis."""

    sizes: tuple[SizeOf, ...]
    literals: tuple[Literal, ...] = ()


Entry = Literal | SizeOf | Scaled | SizeProduct | Broadcast | Unknown


def sizes_in(entry: Entry) -> tuple[SizeOf, ...]:
    """The run-time sizes an entry is computed from."""
    if isinstance(entry, SizeOf):
        return (entry,)
    if isinstance(entry, Scaled):
        return (entry.size,)
    if isinstance(entry, SizeProduct | Broadcast):
        return entry.sizes
    return ()


def _negative_constant(value: ir.Value | None) -> bool:
    array = constant_array(value)
    return array is not None and array.size > 0 and bool((array < 0).all())


def is_size_guard(node: ir.Node, index: int) -> bool:
    """``node`` compares input ``index`` (sizes) with negative constants: never true, so its
    result does not depend on the sizes (TorchScript's ``Equal(shape, -1)`` before Where)."""
    if node.op_type != "Equal" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    return _negative_constant(node.inputs[1 - index])


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
    if op == "Reshape" and value.shape is not None and len(value.shape) == 1:
        return shape_entries(producer.inputs[0], depth + 1)
    if op == "Where":
        return _guarded_entries(producer, depth)
    if op == "Mul":
        return _scaled_entries(producer, value, depth)
    if op == "ReduceProd":
        return _product_entries(producer, depth)
    if op == "Max":
        return _broadcast_entries(producer, depth)
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
    return [SizeOf(data.name, axis, dim_value(data.shape[axis])) for axis in axes]


def _product_entries(node: ir.Node, depth: int) -> list[Entry]:
    """ReduceProd of a whole vector of sizes (size-1 ones dropped) is one ``SizeProduct``."""
    axes = node.inputs[1] if len(node.inputs) > 1 else None
    attr = node.attributes.get("axes")
    listed = int_vector(axes) if axes is not None else (list(attr.value) if attr else None)
    entries = shape_entries(node.inputs[0], depth + 1)
    unknown = [Unknown(f"ReduceProd node '{node.name}'")]
    if entries is None or listed not in (None, [], [0], [-1]):
        return unknown
    sizes = [e for e in entries if not (isinstance(e, Literal) and e.value == 1)
             and not (isinstance(e, SizeOf) and e.static == 1)]  # fmt: skip
    if not sizes or not all(isinstance(e, SizeOf) for e in sizes):
        return unknown
    return [sizes[0] if len(sizes) == 1 else SizeProduct(tuple(sizes))]


def _broadcast_entries(node: ir.Node, depth: int) -> list[Entry] | None:
    """Elementwise Max of size vectors, per position over the entries that are not 1: one
    size is that size; several sizes, or sizes and literals of their static value, are a
    ``Broadcast``; sizes that are all statically 1 give the first of them."""
    vectors = [shape_entries(v, depth + 1) for v in node.inputs]
    if any(v is None for v in vectors):
        return None
    length = max(len(v) for v in vectors)
    if any(len(v) not in (1, length) for v in vectors):
        return None
    out: list[Entry] = []
    for k in range(length):
        column = [v[k if len(v) > 1 else 0] for v in vectors]
        ones = [e for e in column if isinstance(e, SizeOf) and e.static == 1]
        rest = [e for e in column if e not in ones and not (isinstance(e, Literal) and e.value == 1)]
        sizes = list(dict.fromkeys(e for e in rest if isinstance(e, SizeOf)))
        literals = list(dict.fromkeys(e for e in rest if isinstance(e, Literal)))
        values = {e.value for e in literals} | {e.static for e in sizes if literals}
        if sum(isinstance(e, SizeOf | Literal) for e in rest) != len(rest) or len(values) > 1:
            out.append(Unknown(f"Max node '{node.name}'"))
        elif not rest:
            out.append(ones[0] if ones else Unknown(f"Max node '{node.name}'"))
        elif len(sizes) + len(literals) == 1:
            out.append(sizes[0] if sizes else literals[0])
        else:
            out.append(Broadcast(tuple(sizes), tuple(literals)))
    return out


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


def _guarded_entries(node: ir.Node, depth: int) -> list[Entry] | None:
    """``Where(Equal(s, negative), x, s)`` is ``s`` when every entry of ``s`` is a size."""
    cond, sizes = node.inputs[0], node.inputs[2]
    test = cond.producer() if cond is not None else None
    if test is None or sizes is None or not any(
        test.inputs[i] is sizes and is_size_guard(test, i) for i in range(len(test.inputs))
    ):
        return [Unknown(f"Where node '{node.name}'")] * _length(node.outputs[0])
    entries = shape_entries(sizes, depth + 1)
    if entries is None or not all(
        isinstance(e, SizeOf | Scaled) or (isinstance(e, Literal) and e.value >= 0)
        for e in entries
    ):
        return [Unknown(f"Where node '{node.name}'")] * _length(node.outputs[0])
    return entries


def _scaled_entries(node: ir.Node, value: ir.Value, depth: int) -> list[Entry] | None:
    """Sizes times a constant (scalar or one factor per entry) become ``Scaled`` entries."""
    for k in (0, 1):
        factors = int_vector(node.inputs[1 - k])
        if factors is None:
            continue
        entries = shape_entries(node.inputs[k], depth + 1)
        if entries is None:
            return None
        if len(factors) == 1:
            factors = factors * len(entries)
        if len(entries) == 1 and len(factors) > 1:
            entries = entries * len(factors)
        if len(factors) != len(entries):
            return None
        out: list[Entry] = []
        for entry, factor in zip(entries, factors, strict=True):
            if isinstance(entry, SizeOf):
                out.append(entry if factor == 1 else Scaled(entry, factor))
            elif isinstance(entry, Scaled):
                out.append(Scaled(entry.size, entry.factor * factor))
            else:
                out.append(Unknown(f"Mul node '{node.name}'"))
        return out
    return [Unknown(f"Mul node '{node.name}'")] * _length(value)


def _length(value: ir.Value) -> int:
    shape = value.shape
    if shape is not None and len(shape) <= 1 and all(isinstance(d, int) for d in shape):
        return shape[0] if len(shape) == 1 else 1
    return 1

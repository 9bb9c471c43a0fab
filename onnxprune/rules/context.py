"""The context a channel rule declares into.

A rule sees one node and states, for every axis of every input and output, one of:
related to another dim (``same``, ``relate``, ``offset``, ``split_block``), produced by
weights (``produce``), contracted away (``consume``), normalised over (``approximate``),
unrelated to channels at this node (``ignore``) or not provable (``block_dim``/``block``).
An axis a rule leaves undeclared is blocked by the analysis, so forgetting is never unsafe.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.channel_graph import Consumer, Dim, FactorBlock
from onnxprune.shape_values import constant_array

Size = int | str | None


class RuleContext:
    """Records one node's declarations; the analysis merges them into the channel graph."""

    def __init__(self, node: ir.Node, opset: int,
                 interned: dict[tuple[str, int], Dim] | None = None) -> None:  # fmt: skip
        """``interned``: the analysis's one Dim per (tensor, axis), shared by every node's
        context (a dim is made once, not by its producer and again by each reader)."""
        self.node = node
        self.opset = opset
        self._interned = {} if interned is None else interned
        self.name = node.name or ""
        self.sizes: dict[Dim, Size] = {}
        self.declared: set[Dim] = set()
        self.relations: list[tuple[Dim, Dim, np.ndarray, np.ndarray]] = []
        self.produced: set[Dim] = set()
        self.consumers: list[tuple[Dim, Consumer]] = []
        self.blocked: list[tuple[Dim, str]] = []
        self.approximate_dims: list[tuple[Dim, str]] = []
        self.blocks: list[FactorBlock] = []
        self.tensor_blocks: list[tuple[str, str]] = []
        self._shapes: dict[int, tuple[Size, ...]] = {}

    # -- reading the node -------------------------------------------------------------
    def shape(self, value: ir.Value | None) -> tuple[Size, ...] | None:
        """Static shape: ints, symbolic names (str) or None per axis; None if rank unknown."""
        if value is None or value.shape is None:
            return None
        shape = self._shapes.get(id(value))
        if shape is None:  # read once per value: a rule asks for it per axis
            shape = tuple(d if isinstance(d, int) else (d.value if d.value else None)
                          for d in value.shape)  # fmt: skip
            self._shapes[id(value)] = shape
        return shape

    def rank(self, value: ir.Value | None) -> int | None:
        shape = self.shape(value)
        return None if shape is None else len(shape)

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        return constant_array(value)

    def is_const(self, value: ir.Value | None) -> bool:
        """True for initializers and Constant outputs (without reading their data)."""
        if value is None:
            return False
        if value.const_value is not None:
            return True
        producer = value.producer()
        return producer is not None and producer.op_type == "Constant"

    def attr(self, name: str, default=None):
        attr = self.node.attributes.get(name)
        return default if attr is None else attr.value

    def input(self, index: int) -> ir.Value | None:
        inputs = self.node.inputs
        return inputs[index] if index < len(inputs) else None

    def output(self, index: int) -> ir.Value | None:
        outputs = self.node.outputs
        return outputs[index] if index < len(outputs) else None

    def dim(self, value: ir.Value, axis: int) -> Dim:
        rank = self.rank(value)
        if rank is None:
            raise _RankUnknown(value.name)
        if not -rank <= axis < rank:
            raise IndexError(f"axis {axis} out of range for rank {rank} of '{value.name}'")
        axis %= rank
        dim = self._interned.get((value.name, axis))
        if dim is None:
            dim = self._interned[value.name, axis] = Dim(value.name, axis)
        self.sizes.setdefault(dim, self.shape(value)[axis])
        return dim

    def dims(self, value: ir.Value | None) -> list[Dim]:
        rank = self.rank(value)
        if value is None:
            return []
        if rank is None:
            raise _RankUnknown(value.name)
        return [self.dim(value, a) for a in range(rank)]

    def size(self, dim: Dim) -> Size:
        return self.sizes.get(dim)

    # -- declarations -------------------------------------------------------------------
    def same(self, a: Dim, b: Dim) -> None:
        """``a`` and ``b`` are the same index space, position for position."""
        sa, sb = self.size(a), self.size(b)
        if isinstance(sa, int) and isinstance(sb, int) and sa != sb:
            raise ValueError(f"{a} has size {sa} but {b} has size {sb}")
        n = sa if isinstance(sa, int) else sb
        self.declared.update((a, b))
        # Unknown or symbolic sizes still connect the dims (so blocks propagate) but relate
        # no positions: a group holding such a dim is never pruned.
        pos = np.arange(n) if isinstance(n, int) else np.zeros(0, np.int64)
        self.relations.append((a, b, pos, pos))

    def relate(self, a: Dim, b: Dim, a_pos: np.ndarray, b_pos: np.ndarray) -> None:
        """Position ``a_pos[t]`` of ``a`` is the same channel as ``b_pos[t]`` of ``b``."""
        self.declared.update((a, b))
        self.relations.append((a, b, np.asarray(a_pos), np.asarray(b_pos)))

    def offset(self, part: Dim, whole: Dim, start: int) -> None:
        """Position ``i`` of ``part`` is position ``start + i`` of ``whole`` (Concat, Split)."""
        n = self.size(part)
        if not isinstance(n, int):
            self.block_dim(part, "size unknown")
            self.block_dim(whole, "size of a part unknown")
            return
        pos = np.arange(n)
        self.relate(part, whole, pos, pos + start)

    def split_block(self, merged: Dim, factors: list[Dim]) -> None:
        """``merged`` is the row-major product of real dims ``factors`` (outermost first)."""
        sizes = [self.size(f) for f in factors]
        total = self.size(merged)
        if not all(isinstance(s, int) for s in sizes) or not isinstance(total, int):
            for d in (merged, *factors):
                self.block_dim(d, "reshape sizes unknown")
            return
        if int(np.prod(sizes)) != total:
            raise ValueError(f"{merged} ({total}) is not the product of {factors} {sizes}")
        self.declared.update((merged, *factors))
        self.blocks.append(FactorBlock(merged, list(factors), list(sizes), self.name))

    def factor(self, dim: Dim, sizes: list[int]) -> list[Dim]:
        """Virtual dims for ``dim`` seen as a row-major product of ``sizes``."""
        key = tuple(sizes)
        parts = [Dim(dim.tensor, dim.axis, (k, key)) for k in range(len(sizes))]
        for part, size in zip(parts, sizes, strict=True):
            self.sizes[part] = size
        self.declared.add(dim)
        self.blocks.append(FactorBlock(dim, parts, list(sizes), self.name))
        return parts

    def produce(self, dim: Dim) -> None:
        """Weights create the channels of ``dim`` (Conv/Gemm/MatMul output columns)."""
        self.declared.add(dim)
        self.produced.add(dim)

    def consume(self, dim: Dim, input_index: int) -> None:
        """This node contracts ``dim`` (input ``input_index``) away; masks go here."""
        self.declared.add(dim)
        self.consumers.append((dim, Consumer(self.name, input_index, dim.axis)))

    def approximate(self, dim: Dim, reason: str) -> None:
        """The node normalises over ``dim``: removing channels changes the result."""
        self.declared.add(dim)
        self.approximate_dims.append((dim, reason))

    def ignore(self, *dims: Dim) -> None:
        """The dims are not channel-mapped here (broadcast axes, sizes read by Shape)."""
        self.declared.update(dims)

    def block_dim(self, dim: Dim, reason: str) -> None:
        self.declared.add(dim)
        self.blocked.append((dim, reason))

    def block(self, reason: str, values: list[ir.Value | None] | None = None) -> None:
        """Block every axis of ``values`` (default: all inputs and outputs)."""
        if values is None:
            values = [*self.node.inputs, *self.node.outputs]
        for value in values:
            if value is None:
                continue
            if self.rank(value) is None:
                self.tensor_blocks.append((value.name, reason))
                continue
            for dim in self.dims(value):
                self.block_dim(dim, reason)

    def passthrough(self, a: ir.Value, b: ir.Value) -> None:
        """Every axis of ``a`` is the same as the matching axis of ``b`` (same shape)."""
        for da, db in zip(self.dims(a), self.dims(b), strict=True):
            self.same(da, db)

    def broadcast(self, inputs: list[ir.Value | None], output: ir.Value) -> None:
        """NumPy broadcasting: input axes align right; size-1 axes broadcast, others match."""
        out_dims = self.dims(output)
        for value in inputs:
            if value is None:
                continue
            in_dims = self.dims(value)
            lead = len(out_dims) - len(in_dims)
            if lead < 0:
                raise ValueError(f"input '{value.name}' has higher rank than the output")
            for k, d in enumerate(in_dims):
                o = out_dims[lead + k]
                si, so = self.size(d), self.size(o)
                if si == so and si is not None:
                    self.same(d, o)
                elif si == 1:
                    self.ignore(d)
                elif si is None and so == 1:
                    self.same(d, o)
                else:
                    reason = f"cannot prove broadcasting of axis {k} ({si} against {so})"
                    self.block_dim(d, reason)
                    self.block_dim(o, reason)


class _RankUnknown(Exception):
    def __init__(self, tensor: str) -> None:
        super().__init__(f"rank of '{tensor}' unknown (shape inference gave none)")
        self.tensor = tensor

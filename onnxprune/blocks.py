"""Residual blocks: branches a sum can drop, found from the graph alone (no names, no
architectures).

Rule: an ``Add`` (or two-input ``Sum``) of ``s`` and ``y`` in the main graph has a removable
branch ``y`` when

- the **branch** (``y``'s producer and, recursively, every producer whose outputs only branch
  nodes read: the nodes that die when the sum stops reading ``y``; readers that feed no
  graph output, such as folded shape arithmetic, do not count) holds a weight, an
  initializer of rank >= 2 that only branch nodes read, and writes no graph output;
- it reads the elements (not only the shape) of the **block input** ``x``: ``s`` itself
  (identity shortcut), or a float value read by the skip path, the nodes computing ``s``
  that only the sum reads (projection shortcut: a Conv on the skip is kept, only the branch
  goes). Other values it reads (attention masks, rotary tables, shapes) are shared inputs
  and stay;
- ``s`` has the sum's shape and element type, so the sum with the branch dropped is ``s``.

Where both operands qualify (two parallel weighted paths), the one with the shorter path
from ``x`` is the skip; equal lengths are ambiguous and not removable. A **layer** is the
repeating unit of a chain of blocks (each block's input is the previous sum's output, or
is computed from it by single-input nodes): a decoder's attention + MLP sublayer pair.
Removing a block rewires the sum's readers to ``s`` (``passes.remove_blocks``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

import onnx_ir as ir

from onnxprune.graph_values import dim_value

SUMS = frozenset({"Add", "Sum"})
#: Ops that read only the shape of their input: reading x this way makes no shortcut.
SHAPE_READERS = frozenset({"Shape", "Size"})
#: Contractions: one that multiplies two activations marks an attention-like branch.
PRODUCTS = frozenset({"MatMul", "Gemm", "Einsum"})


@dataclass(frozen=True)
class Block:
    """A removable branch: sum node ``add`` keeps its input ``skip_index``."""

    id: int
    add: str
    skip_index: int
    input: str
    nodes: tuple[str, ...]
    weights: tuple[str, ...]
    params: int
    layer: int = -1

    def to_dict(self) -> dict:
        return {"id": self.id, "add": self.add, "skip_input": self.skip_index,
                "input": self.input, "nodes": len(self.nodes), "params": self.params,
                "layer": self.layer}  # fmt: skip


@dataclass(frozen=True)
class NotRemovable:
    """A sum with a weighted branch that cannot be dropped, and why."""

    add: str
    reason: str


@dataclass
class Blocks:
    """The model's removable blocks (in graph order) and the weighted sums that are not."""

    blocks: list[Block]
    not_removable: list[NotRemovable]

    @property
    def layers(self) -> dict[int, list[Block]]:
        out: dict[int, list[Block]] = {}
        for block in self.blocks:
            out.setdefault(block.layer, []).append(block)
        return out


class _Graph:
    """The main graph's node order, its live nodes (those an output depends on: folded shape
    computations a normalised model still holds are no readers) and its varying values (those
    a graph input reaches; the rest are constants)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.order = {node: i for i, node in enumerate(graph)}
        self.live: set[ir.Node] = set()
        stack = [v.producer() for v in graph.outputs]
        while stack:
            node = stack.pop()
            if node is None or node in self.live or node not in self.order:
                continue
            self.live.add(node)
            stack.extend(v.producer() for v in node.inputs if v is not None)
        initializers = set(graph.initializers)
        self.varying = {id(v) for v in graph.inputs if v.name not in initializers}
        for node in graph:
            if any(v is not None and id(v) in self.varying for v in node.inputs):
                self.varying.update(id(v) for v in node.outputs)

    def private(self, start: ir.Node | None, sink: ir.Node, sink_index: int) -> list[ir.Node]:
        """``start`` and its ancestors whose every output is read (by live nodes) only by
        these nodes or by ``sink`` at input ``sink_index``, and is no graph output; in graph
        order. Visiting in reverse graph order decides every reader before its producer."""
        if start is None or start not in self.live:
            return []
        members: set[ir.Node] = set()
        heap = [(-self.order[start], id(start), start)]
        seen = {start}
        while heap:
            _, _, node = heapq.heappop(heap)
            if not all(self._read_only_by(v, members, sink, sink_index) for v in node.outputs):
                continue
            members.add(node)
            for value in node.inputs:
                producer = None if value is None else value.producer()
                if producer is not None and producer in self.live and producer not in seen:
                    seen.add(producer)
                    heapq.heappush(heap, (-self.order[producer], id(producer), producer))
        return sorted(members, key=self.order.__getitem__)

    def _read_only_by(self, value: ir.Value | None, members: set[ir.Node], sink: ir.Node,
                      index: int) -> bool:  # fmt: skip
        if value is None:
            return True
        if value.is_graph_output():
            return False
        return all(use.node in members or (use.node is sink and use.idx == index)
                   or use.node not in self.live for use in value.uses())  # fmt: skip

    def reads(self, nodes: list[ir.Node]) -> list[ir.Value]:
        """Varying values whose elements ``nodes`` read (not only their shape) and none of
        them produces."""
        inside = {id(v) for n in nodes for v in n.outputs}
        out, seen = [], set()
        for node in nodes:
            if node.op_type in SHAPE_READERS:
                continue
            for value in node.inputs:
                if (value is None or id(value) in inside or id(value) in seen
                        or id(value) not in self.varying):  # fmt: skip
                    continue
                seen.add(id(value))
                out.append(value)
        return out

    def position(self, value: ir.Value) -> int:
        producer = value.producer()
        return self.order.get(producer, -1) if producer is not None else -1


def _weights(nodes: list[ir.Node]) -> list[ir.Value]:
    """Initializers of rank >= 2 that only ``nodes`` read."""
    members = set(nodes)
    out, seen = [], set()
    for node in nodes:
        for value in node.inputs:
            if (value is None or value.const_value is None or id(value) in seen
                    or len(value.const_value.shape) < 2):  # fmt: skip
                continue
            seen.add(id(value))
            if all(use.node in members for use in value.uses()):
                out.append(value)
    return out


def _same_shape(a: ir.Value, b: ir.Value) -> bool | None:
    if a.shape is None or b.shape is None:
        return None
    if len(a.shape) != len(b.shape):
        return False
    pairs = [(dim_value(x), dim_value(y)) for x, y in zip(a.shape, b.shape, strict=True)]
    if any(x is None or y is None for x, y in pairs):
        return None
    return all(x == y for x, y in pairs) and a.dtype == b.dtype


def _candidate(g: _Graph, add: ir.Node, skip_index: int) -> tuple | str | None:
    """(branch nodes, skip path, block input, weights) for dropping the other operand, a
    reason it cannot go, or None where it is no weighted branch."""
    s, y = add.inputs[skip_index], add.inputs[1 - skip_index]
    if s is None or y is None or id(s) not in g.varying:
        return None  # a bias: no shortcut
    branch = g.private(y.producer(), add, 1 - skip_index)
    weights = _weights(branch)
    if not weights:
        return None
    skip = g.private(s.producer(), add, skip_index)
    ids = {id(v) for v in g.reads(branch)}
    if id(s) in ids:
        x = s
    else:
        sources = [v for v in g.reads(skip) if id(v) in ids and v.dtype is not None
                   and v.dtype.is_floating_point()]
        if not sources:
            return ("no shortcut: the branch reads neither the other operand nor a value "
                    "it is computed from")  # fmt: skip
        x = max(sources, key=g.position)
    same = _same_shape(s, add.outputs[0])
    if same is None:
        return f"the shape of '{s.name}' or of the sum is not known"
    if not same:
        return f"the branch broadcasts the skip operand '{s.name}' (shape or type differs)"
    return branch, skip, x, weights


def find_blocks(model: ir.Model) -> Blocks:
    """The removable blocks of the main graph (see the module docstring)."""
    graph = model.graph
    g = _Graph(graph)
    found: list[tuple[ir.Node, int, tuple]] = []
    rejected: list[NotRemovable] = []
    for add in graph:
        if add.op_type not in SUMS or add.domain not in ("", "ai.onnx") or add not in g.live:
            continue
        if len(add.inputs) != 2:
            if add.op_type == "Sum" and len(add.inputs) > 2:
                rejected.append(NotRemovable(add.name, f"a Sum of {len(add.inputs)} inputs"))
            continue
        options = [(i, _candidate(g, add, i)) for i in (0, 1)]
        good = [(i, c) for i, c in options if isinstance(c, tuple)]
        if len(good) == 2:  # two weighted paths: the shorter one is the skip
            lengths = [len(c[1]) for _, c in good]
            if lengths[0] == lengths[1]:
                rejected.append(NotRemovable(add.name, "two parallel weighted paths of equal "
                                             "length: neither is the shortcut"))  # fmt: skip
                continue
            good = [min(good, key=lambda ic: len(ic[1][1]))]
        if good:
            found.append((add, good[0][0], good[0][1]))
        else:
            reasons = [c for _, c in options if isinstance(c, str)]
            if reasons:
                rejected.append(NotRemovable(add.name, reasons[0]))
    blocks = []
    for k, (add, skip_index, (branch, _, x, weights)) in enumerate(found):
        params = sum(w.const_value.size for w in weights)
        blocks.append(Block(k, add.name, skip_index, x.name, tuple(n.name for n in branch),
                            tuple(w.name for w in weights), int(params)))  # fmt: skip
    return Blocks(_with_layers(g, graph, blocks), rejected)


def _follow(g: _Graph, graph_nodes: dict[str, ir.Node], block: Block) -> set[str]:
    """Values a next block may start from: the sum's output, and what single-input nodes
    (normalisations, activations) compute from it alone."""
    value = graph_nodes[block.add].outputs[0]
    out = {value.name}
    while True:
        uses = list(value.uses())
        readers = [u.node for u in uses if u.node.op_type not in SUMS and u.node in g.live]
        if len(readers) != 1:
            return out
        node = readers[0]
        live = [v for v in node.inputs if v is not None and id(v) in g.varying]
        if len(live) != 1 or len(node.outputs) < 1 or node.outputs[0] is None:
            return out
        value = node.outputs[0]
        out.add(value.name)


def _with_layers(g: _Graph, graph: ir.Graph, blocks: list[Block]) -> list[Block]:
    """Blocks numbered by layer: each chain of blocks is cut into repeats of its shortest
    period of branch signatures; a chain with no period > 1 is one block per layer."""
    nodes = {node.name: node for node in graph}
    starts = {b.input: b for b in blocks}
    nxt: dict[int, Block] = {}
    for block in blocks:
        for name in _follow(g, nodes, block):
            after = starts.get(name)
            if after is not None and after.id != block.id:
                nxt[block.id] = after
                break
    has_prev = {b.id for b in nxt.values()}
    layer_of: dict[int, int] = {}
    layer = 0
    for block in blocks:
        if block.id in has_prev or block.id in layer_of:
            continue
        chain = [block]
        while (chain[-1].id in nxt and nxt[chain[-1].id] not in chain
               and nxt[chain[-1].id].id not in layer_of):  # fmt: skip
            chain.append(nxt[chain[-1].id])
        period, offset = _period([_signature(g, nodes, b) for b in chain])
        for i, b in enumerate(chain):
            layer_of[b.id] = layer + i if i < offset else layer + offset + (i - offset) // period
        layer += offset + (len(chain) - offset) // period
    for block in blocks:  # any left in a cycle
        if block.id not in layer_of:
            layer_of[block.id] = layer
            layer += 1
    return [Block(b.id, b.add, b.skip_index, b.input, b.nodes, b.weights, b.params,
                  layer_of[b.id]) for b in blocks]  # fmt: skip


def _signature(g: _Graph, nodes: dict[str, ir.Node], block: Block) -> tuple:
    """Op types of the branch nodes that read its weights, and of the products of two
    activations (attention's scores and mixing), counted; shape arithmetic, which exporters
    fold differently per layer, does not count."""
    weights = set(block.weights)
    members = [nodes[n] for n in block.nodes]
    weighted = Counter(n.op_type for n in members
                       if any(v is not None and v.name in weights for v in n.inputs))
    products = Counter(n.op_type for n in members if n.op_type in PRODUCTS and sum(
        v is not None and id(v) in g.varying for v in n.inputs) >= 2)  # fmt: skip
    return tuple(sorted(weighted.items())), tuple(sorted(products.items()))


def _period(signatures: list[tuple]) -> tuple[int, int]:
    """(period, offset): the shortest period p > 1 with which ``signatures[offset:]`` repeats
    at least twice (offset < p: a stem block such as a position embedding may lead), else
    (1, 0)."""
    n = len(signatures)
    for p in range(2, n // 2 + 1):
        for offset in range(p):
            rest = signatures[offset:]
            if len(rest) % p == 0 and len(rest) >= 2 * p and all(
                    rest[i] == rest[i + p] for i in range(len(rest) - p)):  # fmt: skip
                if all(rest[i] == rest[0] for i in range(len(rest))):
                    return 1, 0  # one repeated block: one block per layer
                return p, offset
    return 1, 0

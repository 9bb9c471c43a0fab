"""Name lookup of the values of a graph."""

from __future__ import annotations

import onnx_ir as ir


def reads_constant(node: ir.Node) -> bool:
    """The node has an initializer (or lifted Constant) among its inputs: a weight."""
    return any(v is not None and v.const_value is not None for v in node.inputs)


#: Ops whose subgraphs are analysed like the main graph (a branch runs once, on the values it
#: reads): their nodes, initializers and outputs take part in groups. Loop and Scan bodies
#: carry state between iterations and stay opaque (what they read is blocked).
TRANSPARENT = frozenset({"If"})


def branches(node: ir.Node) -> list[ir.Graph]:
    """The subgraphs of a transparent node (If: then, else) whose every value has a known
    shape, else none: a branch whose shapes inference could not give is left opaque (what it
    reads is blocked) rather than analysed on guesses."""
    if node.op_type not in TRANSPARENT or node.domain not in ("", "ai.onnx"):
        return []
    graphs = [a.value for a in node.attributes.values() if isinstance(a.value, ir.Graph)]
    return graphs if all(_shaped(g) for g in graphs) else []


def _shaped(graph: ir.Graph) -> bool:
    for node in graph:
        if any(v is not None and v.shape is None for v in (*node.inputs, *node.outputs)):
            return False
        if any(not _shaped(a.value) for a in node.attributes.values()
               if isinstance(a.value, ir.Graph)):  # fmt: skip
            return False
    return all(v.shape is not None for v in graph.outputs)


def analysed_nodes(graph: ir.Graph) -> list[ir.Node]:
    """The main graph's nodes and, after each transparent node, its branches' (recursively)."""
    out = []
    for node in graph:
        out.append(node)
        for branch in branches(node):
            out.extend(analysed_nodes(branch))
    return out


def analysed_graphs(graph: ir.Graph) -> list[ir.Graph]:
    """The main graph and every branch of a transparent node in it (recursively)."""
    out = [graph]
    for node in graph:
        for branch in branches(node):
            out.extend(analysed_graphs(branch))
    return out


def all_values(graph: ir.Graph) -> dict[str, ir.Value]:
    """Every named value of the graph and of its transparent nodes' branches: inputs,
    initializers and node outputs."""
    values: dict[str, ir.Value] = {}
    for g in analysed_graphs(graph):
        for v in (*g.inputs, *g.initializers.values()):
            values[v.name] = v
        for node in g:
            for v in node.outputs:
                if v is not None and v.name:
                    values[v.name] = v
    return values


def dim_value(dim: int | ir.SymbolicDim) -> int | str | None:
    """A shape dimension as its size, its symbol's name, or None when unnamed."""
    return dim if isinstance(dim, int) else dim.value

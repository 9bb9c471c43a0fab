"""Name lookup of the values of a graph."""

from __future__ import annotations

import onnx_ir as ir


def reads_constant(node: ir.Node) -> bool:
    """The node has an initializer (or lifted Constant) among its inputs: a weight."""
    return any(v is not None and v.const_value is not None for v in node.inputs)


def all_values(graph: ir.Graph) -> dict[str, ir.Value]:
    """Every named value of the main graph: inputs, initializers and node outputs."""
    values: dict[str, ir.Value] = {}
    for v in (*graph.inputs, *graph.initializers.values()):
        values[v.name] = v
    for node in graph:
        for v in node.outputs:
            if v is not None and v.name:
                values[v.name] = v
    return values


def dim_value(dim: int | ir.SymbolicDim) -> int | str | None:
    """A shape dimension as its size, its symbol's name, or None when unnamed."""
    return dim if isinstance(dim, int) else dim.value

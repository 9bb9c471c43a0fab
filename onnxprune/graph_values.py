"""Name lookup of the values of a graph."""

from __future__ import annotations

import onnx_ir as ir


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

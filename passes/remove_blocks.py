"""Remove residual branches: a sum ``s + f(x)`` whose branch is dropped becomes ``s``.

Rule: every reader of the sum's output reads its kept operand ``s`` instead (a sum that is a
graph output becomes ``Identity(s)`` under the output's name, so the interface keeps its
names); the branch is left dead for ``CleanupPass`` to remove with its initializers. Shape
constants are untouched: removing a branch changes no size. Which sums qualify is decided by
``onnxprune.blocks`` (the skip operand has the sum's shape and type).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from onnxprune.errors import UnsupportedModelError


class RemoveBlocksPass(InPlacePass):
    """Drop the branch of each sum ``(node name, index of the kept input)``."""

    def __init__(self, sums: Sequence[tuple[str, int]]) -> None:
        super().__init__()
        self.sums = list(sums)

    def call(self, model: ir.Model) -> PassResult:
        nodes = {node.name: node for node in model.graph}
        for name, skip_index in self.sums:
            node = nodes.get(name)
            if node is None or node.op_type not in ("Add", "Sum") or len(node.inputs) != 2:
                raise UnsupportedModelError(f"no two-input sum '{name}' in the main graph: the "
                                            "block plan does not fit this model")  # fmt: skip
            keep, out = node.inputs[skip_index], node.outputs[0]
            if out.is_graph_output():
                identity = ir.Node("", "Identity", [keep], name=f"{name}_skip", num_outputs=1)
                model.graph.insert_after(node, identity)
                new = identity.outputs[0]
                new.shape, new.type = out.shape, out.type
                out.replace_all_uses_with(new, replace_graph_outputs=True)
                old_name = out.name
                out.name = f"{old_name}_dropped"
                new.name = old_name
            else:
                out.replace_all_uses_with(keep)
            model.graph.remove(node, safe=True)
        return PassResult(model, bool(self.sums))

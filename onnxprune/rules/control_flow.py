"""Control flow.

If: output k is the k-th output of whichever branch runs, so it is the same dim, axis by axis,
as the k-th output of both branches; the condition is a scalar. The branches' own nodes are
analysed like the main graph (``graph_values.TRANSPARENT``): a value of the outer scope read
inside a branch is an input of that branch's node, consumed and sliced there like anywhere
else. Loop and Scan carry state from one iteration to the next and have no rule: their
channels, and every value their bodies read, are blocked.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.graph_values import branches as graph_branches
from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule


@channel_rule("If")
def if_(node: ir.Node, ctx: RuleContext) -> None:
    """Y_k = then_k or else_k: every axis of both is the same dim as Y_k's."""
    if not graph_branches(node):
        ctx.block("If branches with values of unknown shape are not analysed")
        return
    branches = [node.attributes[k].value for k in ("then_branch", "else_branch")
                if k in node.attributes]  # fmt: skip
    cond = ctx.input(0)
    if ctx.rank(cond):
        ctx.ignore(*ctx.dims(cond))
    for k, y in enumerate(node.outputs):
        outs = [b.outputs[k] for b in branches if k < len(b.outputs)]
        ranks = {ctx.rank(v) for v in (y, *outs)}
        if len(outs) != 2 or len(ranks) != 1 or None in ranks:
            ctx.block(f"If output {k} and its branch outputs differ in rank or are unknown",
                      [y, *outs])  # fmt: skip
            continue
        for out in outs:
            ctx.passthrough(out, y)

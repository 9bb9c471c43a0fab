"""Pooling and reductions.

Pools (MaxPool, AveragePool, LpPool and their Global forms) keep N and C and reduce spatial
axes: C passes through. Reductions map kept axes through. A reduced axis is *consumed* by
ReduceSum, ReduceSumSquare, ReduceL1 and ReduceL2 (zeroed channels add nothing, so removal is
exact) and *approximate* for ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceLogSum and
ReduceLogSumExp (the result depends on how many channels there are or on zero entries).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule
from onnxprune.shape_values import int_vector

POOLS = (
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "MaxRoiPool",
)  # fmt: skip
EXACT_REDUCTIONS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2")
APPROXIMATE_REDUCTIONS = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceLogSum", "ReduceLogSumExp",
)  # fmt: skip
# Opset from which each reduction takes its axes as an input instead of an attribute.
_AXES_AS_INPUT = {"ReduceSum": 13}


@channel_rule(*POOLS[:-1])
def pool(node: ir.Node, ctx: RuleContext) -> None:
    """Y[n, c] pools X[n, c] over space: N and C pass through."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    ctx.same(xd[0], yd[0])
    ctx.same(xd[1], yd[1])
    for d in [*xd[2:], *yd[2:]]:
        ctx.block_dim(d, "spatial axis")
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        if node.outputs[1].uses():
            ctx.block("MaxPool indices are flat positions that include the channel", None)
        else:
            ctx.ignore(*ctx.dims(node.outputs[1]))


@channel_rule(*EXACT_REDUCTIONS, *APPROXIMATE_REDUCTIONS)
def reduction(node: ir.Node, ctx: RuleContext) -> None:
    """Kept axes pass through; reduced axes are consumed (sums) or approximate (others)."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    keepdims = ctx.attr("keepdims", 1)
    if ctx.opset >= _AXES_AS_INPUT.get(node.op_type, 18):
        axes_input = ctx.input(1)
        axes = int_vector(axes_input) if axes_input is not None else []
        if axes_input is not None:
            ctx.ignore(*ctx.dims(axes_input))
        if axes is None:
            ctx.block("reduction axes are computed at run time")
            return
    else:
        axes = list(ctx.attr("axes", []) or [])
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            ctx.passthrough(x, y)
            return
        axes = list(range(len(xd)))
    reduced = {a % len(xd) for a in axes}
    out = iter(yd)
    for k, d in enumerate(xd):
        if k in reduced:
            if node.op_type in EXACT_REDUCTIONS:
                ctx.consume(d, 0)
            else:
                ctx.approximate(d, f"{node.op_type} reduces over this axis")
            if keepdims:
                ctx.ignore(next(out))
        else:
            ctx.same(d, next(out))

"""Ops that read or build shapes, and Gather.

Shape reads the sizes of its input, not its values: the input's axes are declared ignored
here, and the analysis checks separately that every size read flows only into shape inputs
whose rules bind it (Reshape, Expand, ConstantOfShape, Tile, Resize). Expand broadcasts X onto
the target shape; Tile maps output position p of an axis to input position p mod n;
ConstantOfShape's output axes are bound to its shape entries. Gather from a constant table
(an embedding) produces the table's non-gathered axes; the gathered axis itself is indexed
by data and blocked.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.layout import bind_shape_vector
from onnxprune.rules.registry import channel_rule
from onnxprune.shape_values import int_vector


@channel_rule("Shape")
def shape(node: ir.Node, ctx: RuleContext) -> None:
    """Reads X's sizes (checked by the analysis where they flow); the output is a vector."""
    ctx.ignore(*ctx.dims(ctx.input(0)), *ctx.dims(ctx.output(0)))


@channel_rule("Size")
def size(node: ir.Node, ctx: RuleContext) -> None:
    """Reads X's element count, which pruning changes: blocks X."""
    ctx.block("Size reads the element count", [ctx.input(0)])
    ctx.ignore(*ctx.dims(ctx.output(0)))


@channel_rule("Constant")
def constant(node: ir.Node, ctx: RuleContext) -> None:
    """A constant holds no channel flow of its own; its readers relate its axes."""
    ctx.ignore(*ctx.dims(ctx.output(0)))


@channel_rule("ConstantOfShape")
def constant_of_shape(node: ir.Node, ctx: RuleContext) -> None:
    """Y's axis k has the size given by shape entry k (bound like a Reshape target)."""
    bind_shape_vector(ctx, ctx.input(0), ctx.output(0), "ConstantOfShape shape")
    for d in ctx.dims(ctx.output(0)):
        ctx.ignore(d)


@channel_rule("Expand")
def expand(node: ir.Node, ctx: RuleContext) -> None:
    """Y = broadcast(X, shape): X's axes broadcast onto Y; target entries are bound."""
    x, target, y = ctx.input(0), ctx.input(1), ctx.output(0)
    ctx.broadcast([x], y)
    bind_shape_vector(ctx, target, y, "Expand shape")


@channel_rule("Tile")
def tile(node: ir.Node, ctx: RuleContext) -> None:
    """Y[..., p, ...] = X[..., p mod n, ...] on each tiled axis (repeats must be constant)."""
    x, repeats_value, y = ctx.input(0), ctx.input(1), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    ctx.ignore(*ctx.dims(repeats_value))
    repeats = int_vector(repeats_value)
    if repeats is None:
        ctx.block("Tile repeats are computed at run time")
        return
    for dx, dy, r in zip(xd, yd, repeats, strict=True):
        n = ctx.size(dx)
        if r == 1:
            ctx.same(dx, dy)
        elif isinstance(n, int):
            out = np.arange(n * r)
            ctx.relate(dx, dy, out % n, out)
        else:
            ctx.block_dim(dx, "tiled axis of unknown size")
            ctx.block_dim(dy, "tiled axis of unknown size")


@channel_rule("Gather")
def gather(node: ir.Node, ctx: RuleContext) -> None:
    """Y = take(data, indices, axis): data's other axes pass through; indices' axes map in."""
    data, indices, y = ctx.input(0), ctx.input(1), ctx.output(0)
    dd, idd, yd = ctx.dims(data), ctx.dims(indices), ctx.dims(y)
    axis = ctx.attr("axis", 0) % len(dd)
    ctx.block_dim(dd[axis], "axis indexed by Gather")
    out = iter(yd)
    table_is_weight = ctx.is_const(data) and not ctx.is_const(indices)
    for k, d in enumerate(dd):
        if k == axis:
            for i in idd:
                ctx.same(i, next(out))
            continue
        o = next(out)
        ctx.same(d, o)
        if table_is_weight and isinstance(ctx.size(o), int):
            ctx.produce(o)

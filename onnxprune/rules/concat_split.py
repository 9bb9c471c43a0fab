"""Concat, Split and Slice: channel positions move by offsets along the joined axis.

Concat: input i's position p on ``axis`` is the output's position ``offset_i + p``; other
axes are one dim across all inputs. Split is the inverse. Slice with step 1 maps output
position p to input position ``start + p``; positions outside the slice are not read.
Split sizes and Slice bounds are rewritten by the shrink pass; a Slice with another step or
bounds computed at run time blocks the sliced axis.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule
from onnxprune.shape_values import int_vector


@channel_rule("Concat")
def concat(node: ir.Node, ctx: RuleContext) -> None:
    """Y[..., offset_i + p, ...] = X_i[..., p, ...] on ``axis``; other axes shared."""
    y = ctx.output(0)
    yd = ctx.dims(y)
    axis = ctx.attr("axis") % len(yd)
    start = 0
    for x in node.inputs:
        xd = ctx.dims(x)
        for k, (dx, dy) in enumerate(zip(xd, yd, strict=True)):
            if k != axis:
                ctx.same(dx, dy)
        size = ctx.size(xd[axis])
        if not isinstance(size, int):
            ctx.block_dim(xd[axis], "Concat part of unknown size")
            ctx.block_dim(yd[axis], "Concat part of unknown size")
            return
        ctx.offset(xd[axis], yd[axis], start)
        start += size


@channel_rule("Split")
def split(node: ir.Node, ctx: RuleContext) -> None:
    """Y_i[..., p, ...] = X[..., offset_i + p, ...] on ``axis``; other axes shared."""
    x = ctx.input(0)
    xd = ctx.dims(x)
    axis = ctx.attr("axis", 0) % len(xd)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        ctx.ignore(*ctx.dims(node.inputs[1]))
    start = 0
    for y in node.outputs:
        yd = ctx.dims(y)
        for k, (dx, dy) in enumerate(zip(xd, yd, strict=True)):
            if k != axis:
                ctx.same(dx, dy)
        size = ctx.size(yd[axis])
        if not isinstance(size, int):
            ctx.block("Split part of unknown size")
            return
        ctx.offset(yd[axis], xd[axis], start)
        start += size


def _normalise(index: int, size: int, step: int) -> int:
    if index < 0:
        index += size
    return max(0, min(size, index)) if step > 0 else max(-1, min(size - 1, index))


@channel_rule("Slice")
def slice_(node: ir.Node, ctx: RuleContext) -> None:
    """Y[..., p, ...] = X[..., start + p, ...] on sliced axes (step 1); other axes shared."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    for param in node.inputs[1:]:
        if param is not None:
            ctx.ignore(*ctx.dims(param))
    params = [int_vector(p) if p is not None else None for p in node.inputs[1:5]]
    params += [None] * (4 - len(params))
    starts, ends, axes, steps = params
    if starts is None or ends is None or (node.inputs[3:4] and axes is None and node.inputs[3]):
        ctx.block("Slice bounds are computed at run time")
        return
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    sliced = {}
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        sliced[a % len(xd)] = (s, e, st)
    for k, (dx, dy) in enumerate(zip(xd, yd, strict=True)):
        if k not in sliced:
            ctx.same(dx, dy)
            continue
        s, e, st = sliced[k]
        size = ctx.size(dx)
        if st != 1 or not isinstance(size, int):
            ctx.block_dim(dx, "sliced with a step other than 1 or an unknown size")
            ctx.block_dim(dy, "sliced with a step other than 1 or an unknown size")
            continue
        lo, hi = _normalise(s, size, 1), _normalise(e, size, 1)
        n = max(0, hi - lo)
        if isinstance(ctx.size(dy), int) and ctx.size(dy) != n:
            raise ValueError(f"Slice output {dy} has size {ctx.size(dy)}, expected {n}")
        ctx.offset(dy, dx, lo)

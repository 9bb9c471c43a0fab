"""Pad and Resize: spatial axes change, other axes pass through.

Pad passes an axis through when both of its pads are 0 (literal entries, also inside a pads
vector partly computed at run time) and blocks it otherwise. Resize
passes an axis through when its scale is 1 (or its target size equals the input size, a
literal the shrink pass rewrites); other axes are resized and never channel dims.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.layout import bind_shape_vector
from onnxprune.rules.registry import channel_rule
from onnxprune.shape_values import Literal, int_vector, shape_entries


@channel_rule("Pad")
def pad(node: ir.Node, ctx: RuleContext) -> None:
    """Y axis k is X axis k when pads[k] = pads[k + rank] = 0; padded axes are blocked."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    for extra in node.inputs[1:]:
        if extra is not None and ctx.rank(extra):
            ctx.ignore(*ctx.dims(extra))
    pads = _pad_amounts(ctx.input(1)) if ctx.opset >= 11 else list(ctx.attr("pads", []))
    axes_input = ctx.input(3)
    axes = int_vector(axes_input) if axes_input is not None else list(range(len(xd)))
    if pads is None or axes is None or len(pads) != 2 * len(axes):
        ctx.block("Pad amounts are computed at run time")
        return
    padded = set()
    for i, a in enumerate(axes):
        if pads[i] != 0 or pads[i + len(axes)] != 0:  # None: computed at run time
            padded.add(a % len(xd))
    for k, (dx, dy) in enumerate(zip(xd, yd, strict=True)):
        if k in padded:
            ctx.block_dim(dx, "padded axis")
            ctx.block_dim(dy, "padded axis")
        else:
            ctx.same(dx, dy)


def _pad_amounts(value: ir.Value | None) -> list[int | None] | None:
    """The pads vector, entry by entry: an int where it is a constant, None where it is
    computed at run time (TF 'SAME' padding computes the spatial pads from the input's shape
    and concatenates them with literal zeros for the batch and channel axes)."""
    literal = int_vector(value)
    if literal is not None:
        return list(literal)
    entries = shape_entries(value)
    if entries is None:
        return None
    return [e.value if isinstance(e, Literal) else None for e in entries]


@channel_rule("Resize", "Upsample")
def resize(node: ir.Node, ctx: RuleContext) -> None:
    """Y axis k is X axis k where the scale is 1; resized axes are blocked."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    for extra in node.inputs[1:]:
        if extra is not None and ctx.rank(extra):
            ctx.ignore(*ctx.dims(extra))
    sizes = ctx.input(3) if node.op_type == "Resize" and len(node.inputs) > 3 else None
    if sizes is not None and ctx.shape(sizes) != (0,):
        bind_shape_vector(ctx, sizes, y, "Resize sizes")
        for dx, dy in zip(xd, yd, strict=True):
            if ctx.size(dx) == ctx.size(dy) and ctx.size(dx) is not None:
                ctx.same(dx, dy)
            else:
                ctx.block_dim(dx, "resized axis")
                ctx.block_dim(dy, "resized axis")
        return
    if node.op_type == "Upsample":
        scales_value = ctx.input(1)
    else:
        scales_value = ctx.input(2) if ctx.opset >= 11 else ctx.input(1)
    scales = ctx.const(scales_value)
    if scales is None or scales.size != len(xd):
        ctx.block("Resize scales are computed at run time")
        return
    for dx, dy, scale in zip(xd, yd, np.asarray(scales).reshape(-1), strict=True):
        if scale == 1:
            ctx.same(dx, dy)
        else:
            ctx.block_dim(dx, "resized axis")
            ctx.block_dim(dy, "resized axis")

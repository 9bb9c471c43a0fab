"""Normalisations and softmax.

Per-channel normalisations (BatchNormalization, InstanceNormalization) pass channels
through: Y[:, c] depends only on X[:, c] and the c-th entry of each parameter vector, so the
parameters are the same dim as the channel axis. Ops that normalise *across* an axis
(LayerNormalization over its normalised axes, Softmax/LogSoftmax/Hardmax over ``axis``, LRN
over channels) make that axis approximate: removing channels changes every output, so such
groups are pruned only on request and are labelled.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule


def _block_used_extra_outputs(node: ir.Node, ctx: RuleContext, what: str) -> None:
    for out in node.outputs[1:]:
        if out is not None and out.uses():
            ctx.block(f"{what} output '{out.name}' is used", [out])
        elif out is not None and ctx.rank(out) is not None:
            ctx.ignore(*ctx.dims(out))


@channel_rule("BatchNormalization", "InstanceNormalization")
def per_channel_norm(node: ir.Node, ctx: RuleContext) -> None:
    """Y[:, c] = (X[:, c] - mean[c]) / std[c] * scale[c] + B[c]: parameters ~ channel axis."""
    x, y = ctx.input(0), ctx.output(0)
    ctx.passthrough(x, y)
    channel = ctx.dim(y, 1)
    for param in node.inputs[1:]:
        if param is not None:
            ctx.same(ctx.dim(param, 0), channel)
    if node.op_type == "BatchNormalization" and ctx.attr("training_mode", 0):
        ctx.block("BatchNormalization in training mode", [*node.outputs])
    _block_used_extra_outputs(node, ctx, "BatchNormalization statistics")


@channel_rule("LayerNormalization")
def layer_norm(node: ir.Node, ctx: RuleContext) -> None:
    """Normalises X over axes [axis, rank): those axes are approximate; scale/B couple there."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    axis = ctx.attr("axis", -1) % len(xd)
    for k, (dx, dy) in enumerate(zip(xd, yd, strict=True)):
        ctx.same(dx, dy)
        if k >= axis:
            ctx.approximate(dy, "LayerNormalization normalises over this axis")
    for param in node.inputs[1:3]:
        if param is not None:
            ctx.broadcast([param], y)
    _block_used_extra_outputs(node, ctx, "LayerNormalization statistics")


@channel_rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(node: ir.Node, ctx: RuleContext) -> None:
    """Normalises over ``axis`` (opset < 13: over all axes from ``axis`` on): approximate."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    default = 1 if ctx.opset < 13 else -1
    axis = ctx.attr("axis", default) % len(xd)
    for k, (dx, dy) in enumerate(zip(xd, yd, strict=True)):
        ctx.same(dx, dy)
        if k == axis or (ctx.opset < 13 and k > axis):
            ctx.approximate(dy, f"{node.op_type} normalises over this axis")


@channel_rule("LRN")
def lrn(node: ir.Node, ctx: RuleContext) -> None:
    """Local response normalisation mixes neighbouring channels: the channel axis is approximate."""
    x, y = ctx.input(0), ctx.output(0)
    ctx.passthrough(x, y)
    ctx.approximate(ctx.dim(y, 1), "LRN normalises across neighbouring channels")
    for d in ctx.dims(y)[2:]:
        ctx.block_dim(d, "spatial axis")

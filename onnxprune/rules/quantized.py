"""Quantize/dequantize pairs (the QDQ format of ``onnxruntime.quantization``).

QuantizeLinear and DequantizeLinear are elementwise: Y[..., c, ...] = q(X[..., c, ...]).
A per-tensor scale and zero point (0-D, or 1-D of one element) leave every axis free; a
per-axis pair (1-D along ``axis``) is the same dim as that axis, so it is sliced with the
channels (per-channel weights: the int8 initializer, its scale and its zero point go
together). Blocked quantization (``block_size``) is blocked. A removed channel reaches no
consumer here: the float ops after DequantizeLinear are its consumers, where the oracle's
mask puts an exact zero (a masked integer tensor would mean its zero point, not zero).
Integer-arithmetic ops (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, QGemm,
DynamicQuantizeLinear) have no rule: their channels are blocked.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule


@channel_rule("QuantizeLinear", "DequantizeLinear")
@channel_rule("QuantizeLinear", "DequantizeLinear", domain="com.microsoft")
def quantize_linear(node: ir.Node, ctx: RuleContext) -> None:
    """Y = q(X): every axis passes through; a per-axis scale/zero point joins ``axis``."""
    x, y = ctx.input(0), ctx.output(0)
    if ctx.attr("block_size", 0):
        ctx.block(f"{node.op_type} with blocked quantization (block_size)")
        return
    rank = ctx.rank(y)
    params = [p for p in node.inputs[1:3] if p is not None]
    per_axis = [p for p in params if ctx.rank(p) == 1 and ctx.shape(p) != (1,)]
    if per_axis and rank is None:
        ctx.block(f"{node.op_type} with a per-axis scale on a tensor of unknown rank")
        return
    ctx.passthrough(x, y)
    for param in params:
        if param in per_axis:
            ctx.same(ctx.dim(param, 0), ctx.dim(y, ctx.attr("axis", 1) % rank))
        elif ctx.rank(param):
            if ctx.rank(param) != 1:
                ctx.block(f"{node.op_type} scale or zero point of rank {ctx.rank(param)}",
                          [param])  # fmt: skip
            else:
                ctx.ignore(*ctx.dims(param))

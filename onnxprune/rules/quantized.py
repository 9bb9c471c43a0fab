"""Quantize/dequantize pairs (the QDQ format of ``onnxruntime.quantization``).

QuantizeLinear and DequantizeLinear are elementwise: Y[..., c, ...] = q(X[..., c, ...]).
A per-tensor scale and zero point (0-D, or 1-D of one element) leave every axis free; a
per-axis pair (1-D along ``axis``) is the same dim as that axis, so it is sliced with the
channels (per-channel weights: the int8 initializer, its scale and its zero point go
together). Blocked quantization (``block_size``) is blocked. A removed channel reaches no
consumer here: the float ops after DequantizeLinear are its consumers, where the oracle's
mask puts an exact zero (a masked integer tensor would mean its zero point, not zero).
QOperator ops: QLinearConv and com.microsoft QGemm contract their quantized input like Conv
and Gemm (their integer input is a consumer: the oracle's mask sets a removed channel to the
input's zero point, which is what contributes nothing there); their weight's scale and zero
point vectors follow the output channels; QLinearAdd broadcasts like Add. QLinearMatMul has no rule: its channels are blocked.

Dynamic quantization (``quantize_dynamic``): DynamicQuantizeLinear passes every axis through
and is also a consumer of its float input: its scale and zero point come from the range of
the whole tensor, extended to include 0, so a channel zeroed *before* it leaves them as they
are in the pruned model, and quantizes to the zero point exactly. The oracle's mask goes
there (a float zero), and again at the integer consumer (MatMulInteger/ConvInteger input A,
set to its zero point), where ``(a - a_zp)`` then contributes nothing; integer arithmetic
makes the pruned model equal bit for bit. MatMulInteger and ConvInteger contract like MatMul
and Conv; a weight zero-point vector follows the weight's output channels.
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


def _scalars(ctx: RuleContext, node: ir.Node, indices: tuple[int, ...]) -> bool:
    """Per-tensor scales and zero points at ``indices`` (0-D or one element); False (and the
    node blocked) where one is per-axis."""
    for i in indices:
        param = node.inputs[i] if i < len(node.inputs) else None
        if param is None or not ctx.rank(param):
            continue
        if ctx.shape(param) != (1,):
            ctx.block(f"{node.op_type} with a per-axis quantization parameter at input {i}")
            return False
        ctx.ignore(*ctx.dims(param))
    return True


def _per_channel(ctx: RuleContext, node: ir.Node, indices: tuple[int, ...], dim) -> None:
    """Weight scales/zero points at ``indices``: a vector is the weight's output channels."""
    for i in indices:
        param = node.inputs[i] if i < len(node.inputs) else None
        if param is None or not ctx.rank(param):
            continue
        if ctx.shape(param) == (1,):
            ctx.ignore(*ctx.dims(param))
        else:
            ctx.same(ctx.dim(param, 0), dim)


def _conv(ctx: RuleContext, x: ir.Value, w: ir.Value, y: ir.Value) -> tuple[list, list]:
    """An ungrouped convolution's axes: x's channels are w's input channels (consumed), w's
    output channels are y's (produced), batch passes, spatial and kernel axes are blocked.
    Returns (w's dims, y's dims)."""
    xd, wd, yd = ctx.dims(x), ctx.dims(w), ctx.dims(y)
    ctx.same(xd[0], yd[0])
    for dims in (xd[2:], wd[2:], yd[2:]):
        for d in dims:
            ctx.block_dim(d, "spatial or kernel axis")
    ctx.same(xd[1], wd[1])
    ctx.same(wd[0], yd[1])
    ctx.consume(xd[1], 0)
    if isinstance(ctx.size(yd[1]), int):
        ctx.produce(yd[1])
    return wd, yd


@channel_rule("QLinearConv")
def qlinear_conv(node: ir.Node, ctx: RuleContext) -> None:
    """Conv on uint8/int8 (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B): as Conv,
    with w at input 3 and B at 8; w_scale/w_zp vectors follow W's output channels; the
    activation scales are per-tensor. Grouped forms are blocked."""
    x, w, b, y = ctx.input(0), ctx.input(3), ctx.input(8), ctx.output(0)
    if not _scalars(ctx, node, (1, 2, 6, 7)):
        return
    if ctx.attr("group", 1) != 1:
        ctx.block("grouped QLinearConv is not supported yet")
        return
    wd, yd = _conv(ctx, x, w, y)
    _per_channel(ctx, node, (4, 5), wd[0])
    if b is not None:
        ctx.same(ctx.dim(b, 0), yd[1])


@channel_rule("QGemm", domain="com.microsoft")
def qgemm(node: ir.Node, ctx: RuleContext) -> None:
    """Gemm on quantized A (input 0) and B (input 3): A's K axis is contracted with B's; B's
    N axis, its scale/zero-point vectors and C (input 6) are Y's output columns."""
    a, b, c, y = ctx.input(0), ctx.input(3), ctx.input(6), ctx.output(0)
    if not _scalars(ctx, node, (1, 2, 7, 8)) or ctx.attr("transA", 0):
        if ctx.attr("transA", 0):
            ctx.block("QGemm with transA")
        return
    ad, bd, yd = ctx.dims(a), ctx.dims(b), ctx.dims(y)
    b_k, b_n = (bd[1], bd[0]) if ctx.attr("transB", 0) else (bd[0], bd[1])
    ctx.same(ad[1], b_k)
    ctx.consume(ad[1], 0)
    ctx.same(ad[0], yd[0])
    ctx.same(b_n, yd[1])
    if isinstance(ctx.size(yd[1]), int):
        ctx.produce(yd[1])
    _per_channel(ctx, node, (4, 5), b_n)
    if c is not None:
        ctx.broadcast([c], y)


@channel_rule("QLinearAdd", domain="com.microsoft")
def qlinear_add(node: ir.Node, ctx: RuleContext) -> None:
    """C = A + B on quantized tensors with per-tensor scales: broadcasting as Add."""
    if _scalars(ctx, node, (1, 2, 4, 5, 6, 7)):
        ctx.broadcast([ctx.input(0), ctx.input(3)], ctx.output(0))


@channel_rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(node: ir.Node, ctx: RuleContext) -> None:
    """(y, y_scale, y_zp) = dq(x): y's axes are x's; every axis of x is consumed here too (a
    removed channel is zeroed before the range is taken); scale and zero point are scalars."""
    x, y = ctx.input(0), ctx.output(0)
    if ctx.rank(x) is None:
        ctx.block("DynamicQuantizeLinear on a tensor of unknown rank")
        return
    ctx.passthrough(x, y)
    for dim in ctx.dims(x):
        ctx.consume(dim, 0)


@channel_rule("MatMulInteger")
def matmul_integer(node: ir.Node, ctx: RuleContext) -> None:
    """MatMul on (A - a_zp)(B - b_zp) in int32: as MatMul; a b_zp vector is B's columns, an
    a_zp vector (per row of A) is blocked."""
    a, b, y = ctx.input(0), ctx.input(1), ctx.output(0)
    ad, bd, yd = ctx.dims(a), ctx.dims(b), ctx.dims(y)
    if len(ad) < 2 or len(bd) != 2 or not ctx.is_const(b):
        ctx.block("MatMulInteger other than activations x constant 2-D weight")
        return
    a_zp = node.inputs[2] if len(node.inputs) > 2 else None
    if a_zp is not None and ctx.rank(a_zp) and ctx.shape(a_zp) != (1,):
        ctx.block("MatMulInteger with a per-row zero point for A")
        return
    if a_zp is not None:
        ctx.ignore(*ctx.dims(a_zp))
    ctx.same(ad[-1], bd[0])
    ctx.consume(ad[-1], 0)
    ctx.same(bd[1], yd[-1])
    if isinstance(ctx.size(yd[-1]), int):
        ctx.produce(yd[-1])
    for left, out in zip(ad[:-1], yd[:-1], strict=True):
        ctx.same(left, out)
    _per_channel(ctx, node, (3,), bd[1])


@channel_rule("ConvInteger")
def conv_integer(node: ir.Node, ctx: RuleContext) -> None:
    """Conv on (x - x_zp) and (w - w_zp) in int32: as Conv (group 1); a w_zp vector follows
    W's output channels."""
    x, w, y = ctx.input(0), ctx.input(1), ctx.output(0)
    if not _scalars(ctx, node, (2,)):
        return
    if ctx.attr("group", 1) != 1:
        ctx.block("grouped ConvInteger is not supported yet")
        return
    wd, _ = _conv(ctx, x, w, y)
    _per_channel(ctx, node, (3,), wd[0])

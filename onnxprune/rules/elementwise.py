"""Elementwise ops: channels pass through unchanged.

Unary ops map every axis of X to the same axis of Y. Binary and variadic ops broadcast
(numpy rules): an input axis of the output's size is the same dim as the output axis
(residual Add couples both branches; Mul by a per-channel scale couples the scale vector);
a size-1 axis broadcasts and is unrelated to the output's channels.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu",
    "Softplus", "Softsign", "Elu", "Selu", "Celu", "Mish", "ThresholdedRelu", "Shrink",
    "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
    "Sin", "Cos", "Tan", "Not", "IsNaN", "IsInf", "Identity", "Cast", "Swish",
)  # fmt: skip

BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Mod", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "BitShift",
)  # fmt: skip


@channel_rule(*UNARY)
def unary(node: ir.Node, ctx: RuleContext) -> None:
    """Y[..., c, ...] = f(X[..., c, ...]): every axis passes through."""
    ctx.passthrough(ctx.input(0), ctx.output(0))


@channel_rule(*BROADCASTING)
def broadcasting(node: ir.Node, ctx: RuleContext) -> None:
    """Y = f(A, B, ...) with numpy broadcasting: matching axes are one dim."""
    ctx.broadcast(list(node.inputs), ctx.output(0))


@channel_rule("PRelu")
def prelu(node: ir.Node, ctx: RuleContext) -> None:
    """Y = PRelu(X, slope): slope broadcasts onto X (per-channel slope couples)."""
    ctx.broadcast([ctx.input(0), ctx.input(1)], ctx.output(0))


@channel_rule("Clip")
def clip(node: ir.Node, ctx: RuleContext) -> None:
    """Y = clip(X, min, max) with scalar bounds: X passes through."""
    ctx.passthrough(ctx.input(0), ctx.output(0))
    for bound in node.inputs[1:]:
        if bound is not None:
            if ctx.rank(bound) not in (0, None) and ctx.shape(bound) != (1,):
                ctx.block("Clip bound is not a scalar", [bound])
            elif ctx.rank(bound):
                ctx.ignore(*ctx.dims(bound))


@channel_rule("CastLike")
def cast_like(node: ir.Node, ctx: RuleContext) -> None:
    """Y = cast(X) to the dtype of T: X passes through, T's values are not read."""
    ctx.passthrough(ctx.input(0), ctx.output(0))
    ctx.ignore(*ctx.dims(ctx.input(1)))


@channel_rule("Dropout")
def dropout(node: ir.Node, ctx: RuleContext) -> None:
    """Inference Dropout is the identity on X; the optional mask has X's shape."""
    x = ctx.input(0)
    for out in node.outputs:
        if out is not None:
            ctx.passthrough(x, out)
    for extra in node.inputs[1:]:
        if extra is not None and ctx.rank(extra):
            ctx.ignore(*ctx.dims(extra))

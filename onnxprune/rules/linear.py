"""Gemm and MatMul: the contraction axis is consumed, the weight's output axis is produced.

Gemm: ``Y = A' B' + C`` with A' = A or Aᵀ (M x K), B' = B or Bᵀ (K x N): A'[:, k] and B'[k]
are one channel, contracted away; Y[:, n] is produced by B'[:, n] and C broadcast onto Y.
MatMul: ``A (..., M, K) @ B (..., K, N)``: A[..., k] and B[..., k, :] are contracted; Y's
last axis is B's last axis, Y's row axis is A's row axis, batch axes broadcast. 1-D operands
follow numpy (a vector has no M or N axis).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.channel_graph import Dim
from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule


def broadcast_axes(ctx: RuleContext, ins: list[list[Dim]], out: list[Dim]) -> None:
    """Right-aligned broadcasting of the leading (batch) axes of several inputs onto ``out``."""
    for dims in ins:
        lead = len(out) - len(dims)
        for k, d in enumerate(dims):
            o = out[lead + k]
            si, so = ctx.size(d), ctx.size(o)
            if si == 1 and so != 1:
                ctx.ignore(d)
            else:
                ctx.same(d, o)


@channel_rule("Gemm")
def gemm(node: ir.Node, ctx: RuleContext) -> None:
    """A'[:, k] ~ B'[k, :] contracted; Y[:, n] <- B'[:, n]; Y[m, :] ~ A'[m, :]; C broadcast."""
    a, b, c, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    ad, bd, yd = ctx.dims(a), ctx.dims(b), ctx.dims(y)
    a_m, a_k = (ad[1], ad[0]) if ctx.attr("transA", 0) else (ad[0], ad[1])
    b_k, b_n = (bd[1], bd[0]) if ctx.attr("transB", 0) else (bd[0], bd[1])
    ctx.same(a_k, b_k)
    ctx.consume(a_k, 0)
    if not ctx.is_const(b):
        ctx.consume(b_k, 1)
    ctx.same(a_m, yd[0])
    ctx.same(b_n, yd[1])
    if isinstance(ctx.size(yd[1]), int):
        ctx.produce(yd[1])
    if c is not None:
        ctx.broadcast([c], y)


@channel_rule("MatMul")
def matmul(node: ir.Node, ctx: RuleContext) -> None:
    """A[..., k] ~ B[..., k, :] contracted; Y[..., n] <- B[..., n]; Y[..., m, :] ~ A[..., m, :]."""
    a, b, y = ctx.input(0), ctx.input(1), ctx.output(0)
    ad, bd, yd = ctx.dims(a), ctx.dims(b), ctx.dims(y)
    ctx.same(ad[-1], bd[-2] if len(bd) > 1 else bd[0])
    ctx.consume(ad[-1], 0)
    if not ctx.is_const(b):
        ctx.consume(bd[-2] if len(bd) > 1 else bd[0], 1)
    out = list(yd)
    if len(bd) > 1:
        n_axis = out.pop()
        ctx.same(bd[-1], n_axis)
        if isinstance(ctx.size(n_axis), int):
            ctx.produce(n_axis)
    if len(ad) > 1:
        m_axis = out.pop()
        ctx.same(ad[-2], m_axis)
        if ctx.is_const(a) and isinstance(ctx.size(m_axis), int):
            ctx.produce(m_axis)
    broadcast_axes(ctx, [ad[:-2], bd[:-2]], out)

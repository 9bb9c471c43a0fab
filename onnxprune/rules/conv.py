"""Convolutions: output channels are produced by weight rows, input channels are contracted.

Conv: ``Y[:, o]`` is produced by ``W[o]`` and ``B[o]``; ``X[:, c]`` is contracted with
``W[:, c]``. With ``group`` = G > 1, X's channels are G blocks of Cin/G, Y's channels and W's
rows are G blocks of Cout/G, and block k of Y reads only block k of X; so pruning either
removes whole blocks (G shrinks; depthwise convolution passes channels through) or the same
in-block positions from every block (G stays). ConvTranspose mirrors this with W laid out
(Cin, Cout/G, ...). Spatial axes are never channel dims.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule


def _spatial(ctx: RuleContext, *dim_lists) -> None:
    for dims in dim_lists:
        for d in dims:
            ctx.block_dim(d, "spatial or kernel axis")


@channel_rule("Conv")
def conv(node: ir.Node, ctx: RuleContext) -> None:
    """Y[:, o] <- W[o], B[o]; X[:, c] contracted with W[:, c] (per group block)."""
    x, w, b, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    xd, wd, yd = ctx.dims(x), ctx.dims(w), ctx.dims(y)
    groups = ctx.attr("group", 1)
    ctx.same(xd[0], yd[0])
    _spatial(ctx, xd[2:], wd[2:], yd[2:])
    cin, cout, cin_g = ctx.size(xd[1]), ctx.size(wd[0]), ctx.size(wd[1])
    if groups == 1:
        ctx.same(xd[1], wd[1])
        ctx.same(wd[0], yd[1])
    elif isinstance(cin, int) and isinstance(cout, int) and cin_g == cin // groups:
        xf = ctx.factor(xd[1], [groups, cin // groups])
        yf = ctx.factor(yd[1], [groups, cout // groups])
        wf = ctx.factor(wd[0], [groups, cout // groups])
        ctx.same(xf[0], yf[0])
        ctx.same(wf[0], yf[0])
        ctx.same(wf[1], yf[1])
        ctx.same(xf[1], wd[1])
    else:
        ctx.block(f"grouped Conv with unknown channel counts (group={groups})")
        return
    ctx.consume(xd[1], 0)
    if not ctx.is_const(w):
        ctx.consume(wd[1], 1)
    if isinstance(ctx.size(yd[1]), int):
        ctx.produce(yd[1])
    if b is not None:
        ctx.same(ctx.dim(b, 0), yd[1])


@channel_rule("ConvTranspose")
def conv_transpose(node: ir.Node, ctx: RuleContext) -> None:
    """Y[:, o] <- W[:, o], B[o]; X[:, c] contracted with W[c]; grouped forms are blocked."""
    x, w, b, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    xd, wd, yd = ctx.dims(x), ctx.dims(w), ctx.dims(y)
    ctx.same(xd[0], yd[0])
    _spatial(ctx, xd[2:], wd[2:], yd[2:])
    if ctx.attr("group", 1) != 1:
        ctx.block("grouped ConvTranspose is not supported yet", [x, w, b, y])
        return
    ctx.same(xd[1], wd[0])
    ctx.consume(xd[1], 0)
    ctx.same(wd[1], yd[1])
    if isinstance(ctx.size(yd[1]), int):
        ctx.produce(yd[1])
    if b is not None:
        ctx.same(ctx.dim(b, 0), yd[1])

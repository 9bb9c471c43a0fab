"""onnxruntime's fused transformer ops (domain ``com.microsoft``), as written by
``onnxruntime.transformers.optimizer``.

Attention: ``Y = attn(X W + b)`` with W (hidden, 3·H·D) packed as [Q | K | V], each H heads of
D columns; Y (B, S, H·D). Column (part, h, d) of W and b, and Y[..., h, d] belong to head h;
X's hidden axis is contracted with W's rows. Whole heads prune (``num_heads`` is rewritten by
the shrink pass); head_dim and the Q/K/V selector stay whole (the op scales by 1/sqrt(D)).
MultiHeadAttention: query/key/value (B, S, H·D) projected outside; the heads of query, key,
value, the packed bias and the output are one dim. GroupQueryAttention: query (B, S, H·D)
with H = G·R query heads for G KV heads, key/value (B, S, G·D): KV head g and its R query
heads are one unit; KV caches (B, G, T, D) share the KV-head axis.
SkipLayerNormalization (and the simplified RMS form) adds input, skip and bias, then
normalises over the hidden axis: approximate there. BiasGelu/FastGelu/QuickGelu/Gelu are
elementwise with a per-channel bias.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.channel_graph import Dim
from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule

MS = "com.microsoft"


def _batch_sequence(ctx: RuleContext, a: ir.Value, b: ir.Value) -> None:
    for k in range(2):
        ctx.same(ctx.dim(a, k), ctx.dim(b, k))


def _heads(ctx: RuleContext, dim: Dim, sizes: list[int], head: int, why: str) -> Dim | None:
    """Factor ``dim`` as ``sizes`` and return factor ``head``; the other factors stay whole."""
    if not isinstance(ctx.size(dim), int):
        ctx.block_dim(dim, f"{why}: size unknown")
        return None
    parts = ctx.factor(dim, sizes)
    for k, part in enumerate(parts):
        if k != head:
            ctx.block_dim(part, f"{why}: only whole heads prune inside a fused attention op")
    return parts[head]


def _block_rest(node: ir.Node, ctx: RuleContext, first_input: int, first_output: int,
                what: str) -> None:  # fmt: skip
    extra_in = [v for v in node.inputs[first_input:] if v is not None]
    extra_out = [v for v in node.outputs[first_output:] if v is not None and v.uses()]
    if extra_in or extra_out:
        ctx.block(f"{what} with past/present state or attention bias", [*extra_in, *extra_out])
    for v in node.outputs[first_output:]:
        if v is not None and not v.uses() and ctx.rank(v) is not None:
            ctx.ignore(*ctx.dims(v))


@channel_rule("Attention", domain=MS)
def attention(node: ir.Node, ctx: RuleContext) -> None:
    """Packed QKV projection + attention: weight/bias columns (3, H, D) ~ output (H, D)."""
    x, w, b, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    heads = ctx.attr("num_heads")
    if ctx.attr("qkv_hidden_sizes") or not ctx.is_const(w) or heads is None:
        ctx.block("Attention with unequal Q/K/V sizes or computed weights")
        return
    xd, wd, yd = ctx.dims(x), ctx.dims(w), ctx.dims(y)
    _batch_sequence(ctx, x, y)
    ctx.same(xd[2], wd[0])
    ctx.consume(xd[2], 0)
    width = ctx.size(yd[2])
    if not isinstance(width, int) or width % heads or ctx.size(wd[1]) != 3 * width:
        ctx.block("Attention output width is not num_heads x head_size", [w, y, *node.inputs[2:3]])
        return
    d = width // heads
    out_h = _heads(ctx, yd[2], [heads, d], 0, "Attention output")
    w_h = _heads(ctx, wd[1], [3, heads, d], 1, "Attention weight")
    ctx.same(w_h, out_h)
    if b is not None:
        ctx.same(_heads(ctx, ctx.dim(b, 0), [3, heads, d], 1, "Attention bias"), out_h)
    ctx.produce(yd[2])
    mask = ctx.input(3)
    if mask is not None and ctx.rank(mask):
        ctx.ignore(*ctx.dims(mask))
    _block_rest(node, ctx, 4, 1, "Attention")


@channel_rule("MultiHeadAttention", domain=MS)
def multi_head_attention(node: ir.Node, ctx: RuleContext) -> None:
    """Heads of query, key, value, packed bias and output are one dim (3-D inputs only)."""
    q, k, v, bias = (ctx.input(i) for i in range(4))
    y = ctx.output(0)
    heads = ctx.attr("num_heads")
    if heads is None or any(t is None or ctx.rank(t) != 3 for t in (q, k, v, y)):
        ctx.block("MultiHeadAttention with packed or pre-split (4-D/5-D) inputs")
        return
    _batch_sequence(ctx, q, y)
    ctx.same(ctx.dim(k, 0), ctx.dim(q, 0))
    ctx.same(ctx.dim(v, 0), ctx.dim(q, 0))
    ctx.same(ctx.dim(k, 1), ctx.dim(v, 1))
    sizes = [ctx.size(ctx.dim(t, 2)) for t in (q, k, v, y)]
    if not all(isinstance(s, int) and s % heads == 0 for s in sizes):
        ctx.block("MultiHeadAttention widths are not multiples of num_heads")
        return
    out_h = _heads(ctx, ctx.dim(y, 2), [heads, sizes[3] // heads], 0, "MultiHeadAttention")
    for t, size in zip((q, k, v), sizes, strict=False):
        ctx.same(_heads(ctx, ctx.dim(t, 2), [heads, size // heads], 0, "MultiHeadAttention"),
                 out_h)  # fmt: skip
    if bias is not None:
        total = ctx.size(ctx.dim(bias, 0))
        if total != sum(sizes[:3]) or sizes[0] != sizes[1] or sizes[1] != sizes[2]:
            ctx.block("MultiHeadAttention bias is not [q | k | v]", [bias])
        else:
            ctx.same(_heads(ctx, ctx.dim(bias, 0), [3, heads, sizes[0] // heads], 1,
                            "MultiHeadAttention bias"), out_h)  # fmt: skip
    _block_rest(node, ctx, 4, 1, "MultiHeadAttention")


@channel_rule("GroupQueryAttention", domain=MS)
def group_query_attention(node: ir.Node, ctx: RuleContext) -> None:
    """KV head g with its R = H/G query heads is one unit across query, key, value, output."""
    q, k, v, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    heads, kv_heads = ctx.attr("num_heads"), ctx.attr("kv_num_heads")
    if k is None or v is None or heads is None or not kv_heads or heads % kv_heads:
        ctx.block("GroupQueryAttention with packed QKV or unknown head counts")
        return
    rep = heads // kv_heads
    width = ctx.size(ctx.dim(q, 2))
    if not isinstance(width, int) or width % heads:
        ctx.block("GroupQueryAttention query width is not num_heads x head_size")
        return
    d = width // heads
    _batch_sequence(ctx, q, y)
    for t in (k, v):
        _batch_sequence(ctx, t, q)
    group = _heads(ctx, ctx.dim(y, 2), [kv_heads, rep, d], 0, "GroupQueryAttention")
    ctx.same(_heads(ctx, ctx.dim(q, 2), [kv_heads, rep, d], 0, "GroupQueryAttention"), group)
    for t in (k, v):
        ctx.same(_heads(ctx, ctx.dim(t, 2), [kv_heads, d], 0, "GroupQueryAttention"), group)
    _block_rest(node, ctx, 3, 1, "GroupQueryAttention")


@channel_rule("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", domain=MS)
def skip_layer_norm(node: ir.Node, ctx: RuleContext) -> None:
    """Y = LN(input + skip + bias): one hidden dim everywhere, approximate (normalised)."""
    x, y = ctx.input(0), ctx.output(0)
    ctx.broadcast([x, ctx.input(1)], y)
    hidden = ctx.dim(y, -1)
    ctx.approximate(hidden, f"{node.op_type} normalises over the hidden axis")
    for param in node.inputs[2:]:
        if param is not None:
            ctx.broadcast([param], y)
    for extra in node.outputs[1:]:
        if extra is None or ctx.rank(extra) is None:
            continue
        if ctx.rank(extra) == ctx.rank(y) and ctx.size(ctx.dim(extra, -1)) == ctx.size(hidden):
            ctx.passthrough(y, extra)  # input + skip + bias, before normalising
        elif extra.uses():
            ctx.block(f"{node.op_type} statistics output is used", [extra])
        else:
            ctx.ignore(*ctx.dims(extra))


@channel_rule("BiasGelu", "FastGelu", "QuickGelu", "Gelu", "BiasAdd", domain=MS)
def bias_activation(node: ir.Node, ctx: RuleContext) -> None:
    """Y = f(X + bias [+ skip]): elementwise, the bias vector is the last axis."""
    ctx.broadcast([v for v in node.inputs if v is not None], ctx.output(0))


@channel_rule("EmbedLayerNormalization", domain=MS)
def embed_layer_norm(node: ir.Node, ctx: RuleContext) -> None:
    """Y = LN(word[ids] + position[pos] + segment[seg]): embedding tables' columns, gamma,
    beta and Y's hidden axis are one dim, approximate (normalised); ids/mask are not mapped."""
    y = ctx.output(0)
    hidden = ctx.dim(y, 2)
    for k in (0, 1):
        ctx.same(ctx.dim(ctx.input(0), k), ctx.dim(y, k))
    for index in (2, 3, 4):
        table = ctx.input(index)
        if table is not None:
            ctx.ignore(ctx.dim(table, 0))
            ctx.same(ctx.dim(table, 1), hidden)
    for index in (5, 6):
        if ctx.input(index) is not None:
            ctx.same(ctx.dim(ctx.input(index), 0), hidden)
    for index in (1, 7, 8):
        value = ctx.input(index)
        if value is not None and ctx.rank(value):
            ctx.ignore(*ctx.dims(value))
    ctx.produce(hidden)
    ctx.approximate(hidden, "EmbedLayerNormalization normalises over the hidden axis")
    mask_index = ctx.output(1)
    if mask_index is not None and ctx.rank(mask_index):
        ctx.ignore(*ctx.dims(mask_index))
    if ctx.output(2) is not None:
        ctx.passthrough(y, ctx.output(2))

"""Layout ops: Transpose permutes dims; Reshape, Flatten, Squeeze and Unsqueeze regroup them.

Reshape/Flatten align input and output axes into segments of equal size. A 1:1 segment is
one dim; a segment where one side is a single axis and the other several (C x H x W into one
Gemm input axis, H·D into heads x head_dim, C into groups x C/g for a channel shuffle) is a
factor block: the single axis is the row-major product of the others. Many-to-many segments
are blocked. Reshape's target entries must be literals (rewritten by the shrink pass),
0 (copy), -1 (infer) or the run-time size of a tensor axis (coupled to that axis); a target
entry computed otherwise blocks its axis.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.channel_graph import Dim
from onnxprune.rules.context import RuleContext, Size
from onnxprune.rules.registry import channel_rule
from onnxprune.shape_values import Literal, SizeOf, Unknown, int_vector, shape_entries


@channel_rule("Transpose")
def transpose(node: ir.Node, ctx: RuleContext) -> None:
    """Y axis i is X axis perm[i] (default: reversed)."""
    xd, yd = ctx.dims(ctx.input(0)), ctx.dims(ctx.output(0))
    perm = ctx.attr("perm") or list(reversed(range(len(xd))))
    for i, p in enumerate(perm):
        ctx.same(xd[p], yd[i])


def merge(ctx: RuleContext, merged: Dim, factors: list[Dim]) -> None:
    """``merged`` is the row-major product of ``factors``; size-1 factors are ignored."""
    real = [f for f in factors if ctx.size(f) != 1]
    ctx.ignore(*[f for f in factors if ctx.size(f) == 1])
    if not real:
        ctx.ignore(merged)
    elif len(real) == 1:
        ctx.same(merged, real[0])
    else:
        ctx.split_block(merged, real)


def align(xs: tuple[Size, ...], ys: tuple[Size, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair up consecutive axes of two shapes into segments of equal element count.

    Symbolic sizes must face the identical symbol on the other side; returns None if the
    shapes cannot be aligned this way.
    """
    segments: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(xs) or j < len(ys):
        if i < len(xs) and xs[i] == 1 and not (j < len(ys) and ys[j] == 1):
            segments.append(([i], []))
            i += 1
            continue
        if j < len(ys) and ys[j] == 1 and not (i < len(xs) and xs[i] == 1):
            segments.append(([], [j]))
            j += 1
            continue
        if i >= len(xs) or j >= len(ys):
            return None
        if not isinstance(xs[i], int) or not isinstance(ys[j], int):
            if xs[i] is None or xs[i] != ys[j]:
                return None
            segments.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        seg_x, seg_y = [i], [j]
        px, py = xs[i], ys[j]
        i, j = i + 1, j + 1
        while px != py:
            if px < py:
                if i >= len(xs) or not isinstance(xs[i], int):
                    return None
                px *= xs[i]
                seg_x.append(i)
                i += 1
            else:
                if j >= len(ys) or not isinstance(ys[j], int):
                    return None
                py *= ys[j]
                seg_y.append(j)
                j += 1
        segments.append((seg_x, seg_y))
    return segments


def couple_reshaped(ctx: RuleContext, x: ir.Value, y: ir.Value) -> None:
    """Relate the axes of ``x`` and its reshaped view ``y`` segment by segment."""
    xd, yd = ctx.dims(x), ctx.dims(y)
    segments = align(ctx.shape(x), ctx.shape(y))
    if segments is None:
        ctx.block(f"cannot align shapes {ctx.shape(x)} and {ctx.shape(y)}", [x, y])
        return
    for seg_x, seg_y in segments:
        dx, dy = [xd[k] for k in seg_x], [yd[k] for k in seg_y]
        if not dx or not dy:
            ctx.ignore(*dx, *dy)
        elif len(dx) == 1:
            merge(ctx, dx[0], dy)
        elif len(dy) == 1:
            merge(ctx, dy[0], dx)
        else:
            for d in (*dx, *dy):
                ctx.block_dim(d, "Reshape regroups several axes into several others")


def bind_shape_vector(ctx: RuleContext, target: ir.Value | None, out: ir.Value, what: str) -> None:
    """Check each entry of a shape input against the output axis it sets.

    Literals are rewritten by the shrink pass; ``SizeOf(t, k)`` couples the output axis with
    axis k of t (they must keep the same size); computed entries block the axis.
    """
    if target is None:
        return
    if ctx.rank(target) is not None:
        ctx.ignore(*ctx.dims(target))
    yd = ctx.dims(out)
    entries = shape_entries(target)
    if entries is None or len(entries) != len(yd):
        for d in yd:
            ctx.block_dim(d, f"{what} is computed at run time")
        return
    for d, entry in zip(yd, entries, strict=True):
        if isinstance(entry, SizeOf) and entry.tensor != out.name:
            other = Dim(entry.tensor, entry.axis)
            ctx.sizes.setdefault(other, ctx.size(d))
            ctx.same(other, d)
        elif isinstance(entry, Unknown):
            ctx.block_dim(d, f"{what} entry {d.axis} comes from {entry.why}")


@channel_rule("Reshape")
def reshape(node: ir.Node, ctx: RuleContext) -> None:
    """Y is X regrouped: segments of equal size relate (see module docstring)."""
    x, target, y = ctx.input(0), ctx.input(1), ctx.output(0)
    couple_reshaped(ctx, x, y)
    bind_shape_vector(ctx, target, y, "Reshape target")
    entries = shape_entries(target) or []
    xd, yd = ctx.dims(x), ctx.dims(y)
    for k, entry in enumerate(entries):
        if isinstance(entry, Literal) and entry.value == 0 and not ctx.attr("allowzero", 0):
            if k < len(xd):
                ctx.same(xd[k], yd[k])


@channel_rule("Flatten")
def flatten(node: ir.Node, ctx: RuleContext) -> None:
    """Y[:, j] merges X axes [0, axis) into Y axis 0 and [axis, rank) into Y axis 1."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    axis = ctx.attr("axis", 1)
    if axis < 0:
        axis += len(xd)
    merge(ctx, yd[0], xd[:axis])
    merge(ctx, yd[1], xd[axis:])


def _axes(ctx: RuleContext, node: ir.Node) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        ctx.ignore(*ctx.dims(node.inputs[1]))
        return int_vector(node.inputs[1])
    attr = ctx.attr("axes")
    return list(attr) if attr is not None else []


@channel_rule("Squeeze")
def squeeze(node: ir.Node, ctx: RuleContext) -> None:
    """Y is X without the listed size-1 axes (all size-1 axes when none are listed)."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    axes = _axes(ctx, node)
    if axes is None:
        ctx.block("Squeeze axes are computed at run time")
        return
    if not axes:
        axes = [k for k, d in enumerate(xd) if ctx.size(d) == 1]
    removed = {a % len(xd) for a in axes}
    kept = [d for k, d in enumerate(xd) if k not in removed]
    ctx.ignore(*[xd[k] for k in removed])
    for a, b in zip(kept, yd, strict=True):
        ctx.same(a, b)


@channel_rule("Unsqueeze")
def unsqueeze(node: ir.Node, ctx: RuleContext) -> None:
    """Y is X with size-1 axes inserted at the listed output positions."""
    x, y = ctx.input(0), ctx.output(0)
    xd, yd = ctx.dims(x), ctx.dims(y)
    axes = _axes(ctx, node)
    if axes is None:
        ctx.block("Unsqueeze axes are computed at run time")
        return
    inserted = {a % len(yd) for a in axes}
    rest = [d for k, d in enumerate(yd) if k not in inserted]
    ctx.ignore(*[yd[k] for k in inserted])
    for a, b in zip(xd, rest, strict=True):
        ctx.same(a, b)

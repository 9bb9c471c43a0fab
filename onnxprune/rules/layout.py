"""Layout ops: Transpose permutes dims; Reshape, Flatten, Squeeze and Unsqueeze regroup them.

Reshape/Flatten align input and output axes into segments of equal size. A 1:1 segment is
one dim; a segment where one side is a single axis and the other several (C x H x W into one
Gemm input axis, H·D into heads x head_dim, C into groups x C/g for a channel shuffle) is a
factor block: the single axis is the row-major product of the others. Many-to-many segments
are blocked. Where the leading axes do not align (sizes only known at run time, e.g.
``unk__3``), the trailing axes are aligned from the right and the leading ones blocked. Reshape's target entries must be literals (rewritten by the shrink pass),
0 (copy), -1 (infer) or the run-time size of a tensor axis (coupled to that axis); a target
entry computed otherwise blocks its axis.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.channel_graph import Dim
from onnxprune.rules.context import RuleContext, Size
from onnxprune.rules.registry import channel_rule
from onnxprune.shape_values import (
    Broadcast,
    Literal,
    Scaled,
    SizeOf,
    SizeProduct,
    Unknown,
    int_vector,
    shape_entries,
    sizes_in,
)


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


Product = tuple[int, tuple[str, ...]]


def _top_level_factors(text: str) -> list[str] | None:
    """``text`` split at the ``*`` outside parentheses; None if it also adds or divides
    at top level (then it is one opaque symbol)."""
    parts, depth, current = [], 0, ""
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if depth == 0 and c == "*":
            if text[i + 1 : i + 2] == "*" or text[i - 1 : i] == "*":
                return None
            parts.append(current)
            current = ""
            continue
        if depth == 0 and c in "+-/%":
            return None
        current += c
    parts.append(current)
    return parts if all(parts) else None


def product(size: Size) -> Product | None:
    """``size`` as (static coefficient, sorted symbols): ``"batch*floor(h/7)"`` is
    (1, ("batch", "floor(h/7)")); a size with top-level arithmetic other than ``*`` is one
    opaque symbol."""
    if isinstance(size, int):
        return size, ()
    if not size:
        return None
    text = size.replace(" ", "")
    parts = _top_level_factors(text) or [text]
    coef, symbols = 1, []
    for part in parts:
        if part.isdigit():
            coef *= int(part)
        else:
            symbols.append(part)
    return coef, tuple(sorted(symbols))


def _times(a: Product, b: Product) -> Product:
    return a[0] * b[0], tuple(sorted(a[1] + b[1]))


def _divides(a: Product, b: Product) -> bool:
    rest = list(b[1])
    for s in a[1]:
        if s not in rest:
            return False
        rest.remove(s)
    return a[0] != 0 and b[0] % a[0] == 0


def align(xs: tuple[Size, ...], ys: tuple[Size, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair up consecutive axes of two shapes into segments of equal element count.

    Sizes are products of a static part and symbols (``batch*sequence`` faces ``batch``,
    ``sequence``); a segment grows on the side whose product divides the other's. Returns None
    if the shapes cannot be aligned this way.
    """
    segments, i, j = _segments(xs, ys)
    return segments if i == len(xs) and j == len(ys) else None


def align_trailing(xs: tuple[Size, ...], ys: tuple[Size, ...],
                   ) -> tuple[list[int], list[int], list[tuple[list[int], list[int]]]] | None:  # fmt: skip
    """(leading x axes, leading y axes, segments of the trailing axes): ``align`` from the
    right as far as it goes. The trailing segments hold equal element counts pairwise, so
    in row-major order the leading axes, whose sizes need not be comparable (run-time
    symbols such as ``unk__3``), map onto each other as one block. None if no trailing
    segment aligns."""
    segments, i, j = _segments(xs[::-1], ys[::-1])
    if not segments:
        return None
    nx, ny = len(xs), len(ys)
    trailing = [([nx - 1 - k for k in reversed(sx)], [ny - 1 - k for k in reversed(sy)])
                for sx, sy in reversed(segments)]  # fmt: skip
    return list(range(nx - i)), list(range(ny - j)), trailing


def _segments(xs: tuple[Size, ...], ys: tuple[Size, ...],
              ) -> tuple[list[tuple[list[int], list[int]]], int, int]:  # fmt: skip
    """The segments ``align`` finds from the left until one does not close, and the axes
    (i, j) where that one started."""
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
            return segments, i, j
        px, py = product(xs[i]), product(ys[j])
        if px is None or py is None:
            return segments, i, j
        seg_x, seg_y = [i], [j]
        ni, nj = i + 1, j + 1
        while px != py:
            static = not px[1] and not py[1]
            if (px[0] < py[0] if static else _divides(px, py)) and ni < len(xs) and (f := product(xs[ni])) is not None:
                px = _times(px, f)
                seg_x.append(ni)
                ni += 1
            elif (py[0] < px[0] if static else _divides(py, px)) and nj < len(ys) and (f := product(ys[nj])) is not None:
                py = _times(py, f)
                seg_y.append(nj)
                nj += 1
            else:
                return segments, i, j
        segments.append((seg_x, seg_y))
        i, j = ni, nj
    return segments, i, j


def couple_reshaped(ctx: RuleContext, x: ir.Value, y: ir.Value) -> None:
    """Relate the axes of ``x`` and its reshaped view ``y`` segment by segment."""
    xd, yd = ctx.dims(x), ctx.dims(y)
    segments = align(ctx.shape(x), ctx.shape(y))
    if segments is None:
        trailing = align_trailing(ctx.shape(x), ctx.shape(y))
        if trailing is None:
            ctx.block(f"cannot align shapes {ctx.shape(x)} and {ctx.shape(y)}", [x, y])
            return
        lead_x, lead_y, segments = trailing
        for d in (*[xd[k] for k in lead_x], *[yd[k] for k in lead_y]):
            ctx.block_dim(d, f"Reshape maps leading axes {ctx.shape(x)[:len(lead_x)]} onto "
                          f"{ctx.shape(y)[:len(lead_y)]}, sizes not comparable")  # fmt: skip
    for seg_x, seg_y in segments:
        dx, dy = [xd[k] for k in seg_x], [yd[k] for k in seg_y]
        if not dx or not dy:
            ctx.ignore(*dx, *dy)
        elif len(dx) == 1:
            merge(ctx, dx[0], dy)
        elif len(dy) == 1:
            merge(ctx, dy[0], dx)
        elif not _refine(ctx, dx, dy):
            for d in (*dx, *dy):
                ctx.block_dim(d, "Reshape regroups several axes into several others")


def _refine(ctx: RuleContext, dx: list[Dim], dy: list[Dim]) -> bool:
    """Relate two groupings of the same static axes through their common refinement:
    (2048, 64) -> (512, 256) is (512, 4 | 64) -> (512 | 4, 64), so axis 2048 = 512 x 4,
    axis 256 = 4 x 64 and the pieces pair up in order. False when sizes do not nest."""
    sx, sy = [ctx.size(d) for d in dx], [ctx.size(d) for d in dy]
    if not all(isinstance(n, int) and n > 1 for n in (*sx, *sy)):
        return False
    px: list[list[int]] = [[] for _ in sx]
    py: list[list[int]] = [[] for _ in sy]
    order: list[tuple[int, int, int, int]] = []  # (x axis, piece k, y axis, piece k)
    i = j = 0
    rx, ry = sx[0], sy[0]
    while i < len(sx) and j < len(sy):
        piece = min(rx, ry)
        if max(rx, ry) % piece:
            return False
        order.append((i, len(px[i]), j, len(py[j])))
        px[i].append(piece)
        py[j].append(piece)
        rx, ry = rx // piece, ry // piece
        if rx == 1:
            i += 1
            rx = sx[i] if i < len(sx) else 1
        if ry == 1:
            j += 1
            ry = sy[j] if j < len(sy) else 1
    parts_x = [ctx.factor(d, p) if len(p) > 1 else [d] for d, p in zip(dx, px, strict=True)]
    parts_y = [ctx.factor(d, p) if len(p) > 1 else [d] for d, p in zip(dy, py, strict=True)]
    for a, ka, b, kb in order:
        ctx.same(parts_x[a][ka], parts_y[b][kb])
    return True


def bind_shape_vector(ctx: RuleContext, target: ir.Value | None, out: ir.Value, what: str) -> None:
    """Check each entry of a shape input against the output axis it sets.

    Literals are rewritten by the shrink pass; ``SizeOf(t, k)`` couples the output axis with
    axis k of t (they must keep the same size); ``Scaled(SizeOf(t, k), c)`` makes the output
    axis the row-major product (axis k of t) x (c, kept whole); ``Broadcast`` couples it with
    each of its sizes; ``SizeProduct`` of consecutive axes of a Reshape's own input says
    what :func:`couple_reshaped` derives from the shapes (nothing to add), of any other axes
    makes the output axis their row-major product; other computed entries block the axis.
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
    source = ctx.input(0) if ctx.node.op_type == "Reshape" else None
    for d, entry in zip(yd, entries, strict=True):
        if isinstance(entry, SizeOf | Broadcast):
            for size in sizes_in(entry):
                if size.tensor != out.name:
                    other = Dim(size.tensor, size.axis)
                    ctx.sizes.setdefault(other, ctx.size(d))
                    ctx.same(other, d)
        elif isinstance(entry, SizeProduct):
            axes = [s.axis for s in entry.sizes]
            own = source is not None and {s.tensor for s in entry.sizes} == {source.name}
            if own and axes == list(range(axes[0], axes[0] + len(axes))):
                continue
            factors = [Dim(s.tensor, s.axis) for s in entry.sizes]
            for f, size in zip(factors, entry.sizes, strict=True):
                ctx.sizes.setdefault(f, size.static)
            merge(ctx, d, factors)
        elif isinstance(entry, Scaled) and entry.size.tensor != out.name:
            other = Dim(entry.size.tensor, entry.size.axis)
            size = ctx.size(d)
            if not isinstance(size, int) or entry.factor <= 0 or size % entry.factor:
                ctx.block_dim(d, f"{what} entry {d.axis} is a size times {entry.factor}")
                continue
            whole = size // entry.factor
            ctx.sizes.setdefault(other, whole)
            outer, inner = ctx.factor(d, [whole, entry.factor])
            ctx.same(other, outer)
            ctx.block_dim(inner, f"{what} entry {d.axis} multiplies a size by {entry.factor}")
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

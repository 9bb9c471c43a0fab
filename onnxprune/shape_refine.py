"""Fill in Reshape and Pad output sizes that ONNX shape inference leaves unknown.

Pad: where the pads vector is partly computed at run time (TF 'SAME' padding computes the
spatial pads from the input shape), an axis whose two pad entries are literal zeros keeps
its input size.

With a symbolic batch, ONNX cannot infer the ``-1`` of ``Reshape(x, [N, -1])``. The target
entries say what each output axis is: a literal, 0 (copy input axis), the size of some
tensor's axis (``SizeOf``) or a product of such sizes (``SizeProduct``), or -1; symbolic sizes
cancel between input and output, so the -1 is the quotient of the static parts. Refined shapes are written back and shape inference is
run again so that they reach downstream nodes.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from onnxprune.graph_values import all_values
from onnxprune.shape_inference import infer_shapes
from onnxprune.shape_values import Literal, SizeOf, SizeProduct, shape_entries, sizes_in


def _refined(node: ir.Node, values: dict[str, ir.Value]) -> list | None:
    x, target, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if x is None or x.shape is None or y.shape is None:
        return None
    entries = shape_entries(target)
    if entries is None or len(entries) != len(y.shape):
        return None
    factors: list[list | None] = []  # per output axis: its ints and symbols, or None for -1
    for axis, entry in enumerate(entries):
        if isinstance(entry, Literal) and entry.value > 0:
            factors.append([entry.value])
        elif isinstance(entry, Literal) and entry.value == 0 and axis < len(x.shape):
            factors.append([x.shape[axis]])
        elif isinstance(entry, SizeOf | SizeProduct):
            sizes = [values.get(s.tensor) for s in sizes_in(entry)]
            if any(v is None or v.shape is None for v in sizes):
                return None
            factors.append([v.shape[s.axis] for v, s in zip(sizes, sizes_in(entry), strict=True)])
        elif isinstance(entry, Literal) and entry.value == -1:
            factors.append(None)
        else:
            return None
    if factors.count(None) > 1:
        return None
    out = [_product(f) if f is not None else -1 for f in factors]
    out = [y.shape[k] if d is None else d for k, d in enumerate(out)]
    if -1 in out:
        given = [d for f in factors if f is not None for d in f]
        inner = [d for d in x.shape if not isinstance(d, int)]
        outer = [d for d in given if not isinstance(d, int)]
        if sorted(map(str, inner)) != sorted(map(str, outer)):
            return None
        known_in = math.prod(d for d in x.shape if isinstance(d, int))
        known_out = math.prod(d for d in given if isinstance(d, int))
        if known_out == 0 or known_in % known_out:
            return None
        out[out.index(-1)] = known_in // known_out
    return out


def _product(dims: list) -> int | str | None:
    """Ints multiplied; with symbols, ``coefficient*a*b`` as a symbolic size; None with a
    symbol ONNX inference made up (onnxruntime's inference renames those later)."""
    number = math.prod(d for d in dims if isinstance(d, int))
    symbols = [str(d) for d in dims if not isinstance(d, int)]
    if not symbols:
        return number
    if len(dims) > 1 and not all(_known(d) for d in dims):
        return None
    return "*".join(([str(number)] if number != 1 else []) + symbols)


def _known(dim: int | ir.SymbolicDim) -> bool:
    """An int, or a named symbol that is not one ONNX inference made up (``unk__N``)."""
    return isinstance(dim, int) or bool(dim.value and not str(dim.value).startswith("unk__"))


def _padded(node: ir.Node, values: dict[str, ir.Value]) -> list | None:
    """Pad's output shape where its unpadded axes (literal zero pads) keep their sizes."""
    x, y = node.inputs[0], node.outputs[0]
    if x is None or x.shape is None or len(node.inputs) < 2 or (
            len(node.inputs) > 3 and node.inputs[3] is not None):  # fmt: skip
        return None
    entries = shape_entries(node.inputs[1])
    rank = len(x.shape)
    if entries is None or len(entries) != 2 * rank:
        return None
    current = list(y.shape) if y.shape is not None and len(y.shape) == rank else [None] * rank
    zero = [isinstance(e, Literal) and e.value == 0 for e in entries]
    out = [x.shape[k] if zero[k] and zero[k + rank] else current[k] for k in range(rank)]
    return out if out != current else None


def refine_reshape_shapes(model: ir.Model) -> bool:
    """Complete unknown Reshape output dims from their targets and Pad output dims of
    unpadded axes; True if any changed."""
    values = all_values(model.graph)
    changed = False
    for node in model.graph:
        if node.op_type not in ("Reshape", "Pad") or node.domain not in ("", "ai.onnx"):
            continue
        y = node.outputs[0]
        if y.shape is not None and all(_known(d) for d in y.shape):
            continue
        refined = (_refined if node.op_type == "Reshape" else _padded)(node, values)
        if refined is not None:
            y.shape = ir.Shape(refined)
            changed = True
    if changed:
        infer_shapes(model)
    return changed


def contrib_gemm_shapes(model: ir.Model) -> int:
    """Output shapes of com.microsoft QGemm, which neither ONNX's nor onnxruntime's shape
    inference gives: Y is (M, N) with M from A (A is (M, K); transA is not written by the
    quantizer) and N from B ((N, K) with transB, else (K, N)); its type is the output zero
    point's (quantized output) or float. Returns how many were set."""
    changed = 0
    for node in model.graph:
        if node.op_type != "QGemm" or node.domain != "com.microsoft" or not node.outputs:
            continue
        y, a, b = node.outputs[0], node.inputs[0], node.inputs[3]
        trans_a, trans_b = node.attributes.get("transA"), node.attributes.get("transB")
        if (y.shape is not None or a is None or b is None or a.shape is None or b.shape is None
                or len(a.shape) != 2 or len(b.shape) != 2 or (trans_a and trans_a.value)):  # fmt: skip
            continue
        n = b.shape[0] if trans_b is not None and trans_b.value else b.shape[1]
        y.shape = ir.Shape([a.shape[0], n])
        zero = node.inputs[8] if len(node.inputs) > 8 else None
        if y.dtype is None:
            y.dtype = zero.dtype if zero is not None and zero.dtype else ir.DataType.FLOAT
        changed += 1
    return changed

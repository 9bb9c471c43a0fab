"""Parameters and MACs of an ONNX model, by op type.

Parameters: elements of every float initializer read by a node, and of every 8- or 4-bit
integer initializer read as a quantized weight, counted once and attributed to the op type of
its first reader in graph order. MACs: multiply-accumulates of the
contractions only (the thop/fvcore convention), for one run at the bound input dims:
Conv N·Cout·prod(out spatial)·Cin/group·prod(kernel); ConvTranspose
N·Cin·prod(in spatial)·Cout/group·prod(kernel); Gemm M·N·K; MatMul prod(batch)·M·N·K; the
quantized QLinearConv/ConvInteger/QLinearMatMul/MatMulInteger as their float twins; Einsum
the product of every index's size; onnxruntime's fused Attention, MultiHeadAttention and
GroupQueryAttention their projections and score/value products; com.microsoft MatMulNBits
(block-quantized 2-8 bit weights, packed) as the MatMul it stands for, prod(y)·K, its packed
weight counting K·N parameters.
Elementwise ops, normalisations and pools count 0. Nodes whose shapes stay unknown count 0
and are listed in ``unknown``. An ``If`` counts its costlier branch; Loop and Scan bodies
are not counted.

Binding (``Dims``): a key that names a graph input gives that input's whole shape, and its
symbolic axes take those sizes (the only way to size unnamed axes); any other key names a
symbolic dim; what is left takes 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import onnx
import onnx_ir as ir
from onnx import TensorProto

from onnxprune.passes.cleanup import drop_intermediate_shapes
from onnxprune.quantization import QUANTIZED_TYPES, WEIGHT_INPUT
from onnxprune.skeleton import graphs, skeleton
from onnxprune.symbolic_shapes import infer_symbolic_shapes

Dims = Mapping[str, int | Sequence[int]]
#: A model to count: an onnx-ir model is counted on its weightless skeleton (never serialized
#: with its weights, so a model of any size counts in a few hundred kilobytes).
Countable = onnx.ModelProto | ir.Model

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ModelCost:
    """Totals and per-op-type breakdowns of a model's parameters and MACs."""

    params: int
    macs: int
    params_by_op: dict[str, int] = field(default_factory=dict)
    macs_by_op: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def dim_size(dims: Dims, input_name: str, axis: int, name: str, default: int = 1) -> int:
    """The size bound to symbolic ``axis`` (dim name ``name``) of graph input ``input_name``."""
    whole = dims.get(input_name)
    if whole is not None and not isinstance(whole, int) and axis < len(whole):
        return int(whole[axis])
    named = dims.get(name) if name else None
    return named if isinstance(named, int) else default


def _bind(model: onnx.ModelProto, dims: Dims) -> onnx.ModelProto:
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for value in bound.graph.input:
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                d.dim_value = dim_size(dims, value.name, axis, d.dim_param)
    # Shapes of custom-op outputs are only known from what the exporter declared; the rest
    # are inferred again with the dims bound.
    custom = {o for n in bound.graph.node if n.domain not in ("", "ai.onnx") for o in n.output}
    kept = [v for v in bound.graph.value_info if v.name in custom]
    del bound.graph.value_info[:]
    bound.graph.value_info.extend(kept)
    imported = {o.domain for o in bound.opset_import}
    for domain in {n.domain for n in bound.graph.node} - imported - {"ai.onnx"}:
        bound.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    try:
        return onnx.shape_inference.infer_shapes(bound, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError):
        return bound  # sizes the inference rejects count as unknown


def _shapes(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    """Static shapes of the values of the main graph and of every subgraph."""
    shapes: dict[str, list[int] | None] = {}
    for graph in graphs(model.graph):
        for value in (*graph.input, *graph.value_info, *graph.output):
            t = value.type.tensor_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                shapes[value.name] = [d.dim_value for d in t.shape.dim]
        for init in graph.initializer:
            shapes[init.name] = list(init.dims)
    return shapes


def _bound_shapes(
    model: onnx.ModelProto, dims: Dims
) -> tuple[onnx.ModelProto, dict[str, list[int] | None]]:
    """The model with dims bound and static shapes of its values. Where ONNX inference
    leaves a contraction's shapes unknown, onnxruntime's symbolic inference fills them in."""
    inferred = _bind(model, dims)
    shapes = _shapes(inferred)
    contractions = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "MatMulNBits",
                    *_ATTENTION}  # fmt: skip
    if any(n.op_type in contractions and _node_macs(n, shapes) is None for n in inferred.graph.node):
        for name, shape in (infer_symbolic_shapes(inferred) or {}).items():
            if name not in shapes and all(isinstance(d, int) for d in shape):
                shapes[name] = shape
    return inferred, shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int] | None]) -> int | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return _macs(node.op_type, node.domain, node.input, node.output, attrs, shapes)


def _macs(op_type: str, domain: str, inputs: Sequence[str], outputs: Sequence[str],
          attrs: Mapping[str, object], shapes: Mapping[str, list[int] | None]) -> int | None:  # fmt: skip
    """MACs of one node (module docstring) from its inputs' and outputs' names and shapes."""

    def shape(i: int, out: bool = False) -> list[int] | None:
        names = outputs if out else inputs
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    if op_type == "Conv":
        w, y = shape(1), shape(0, True)
        if w is None or y is None:
            return None
        return y[0] * y[1] * math.prod(y[2:]) * w[1] * math.prod(w[2:])
    if op_type == "ConvTranspose":
        x, w = shape(0), shape(1)
        if x is None or w is None:
            return None
        return x[0] * x[1] * math.prod(x[2:]) * w[1] * math.prod(w[2:])
    if op_type == "Gemm":
        a, y = shape(0), shape(0, True)
        if a is None or y is None:
            return None
        k = a[0] if attrs.get("transA", 0) else a[1]
        return y[0] * y[1] * k
    if op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a, y = shape(0), shape(0, True)
        if a is None or y is None:
            return None
        return math.prod(y) * a[-1]
    if op_type == "MatMulNBits" and domain == "com.microsoft":
        y = shape(0, True)
        return None if y is None else math.prod(y) * attrs["K"]
    if op_type in ("QLinearConv", "ConvInteger"):
        w, y = shape(3 if op_type == "QLinearConv" else 1), shape(0, True)
        if w is None or y is None:
            return None
        return y[0] * y[1] * math.prod(y[2:]) * w[1] * math.prod(w[2:])
    if op_type == "Einsum":
        return _einsum_macs(attrs.get("equation", b""), [shape(i) for i in range(len(inputs))])
    if domain == "com.microsoft" and op_type in _ATTENTION:
        return _ATTENTION[op_type](shape, attrs)
    return 0


def _einsum_macs(equation: bytes | str, shapes: list[list[int] | None]) -> int | None:
    """A contraction of two or more operands costs the product of every index's size (each
    output element sums over the contracted indices); a single operand costs 0."""
    if len(shapes) < 2:
        return 0
    text = equation.decode() if isinstance(equation, bytes) else equation
    terms = text.replace(" ", "").split("->")[0].split(",")
    if any(s is None for s in shapes) or len(terms) != len(shapes) or "..." in text:
        return None
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        if len(term) != len(shape):
            return None
        sizes.update(zip(term, shape, strict=True))
    return math.prod(sizes.values())


def _attention_macs(shape, attrs) -> int | None:
    """com.microsoft Attention: the packed QKV projection (B·S·D_in·(q+k+v)) plus Q·Kᵀ and
    P·V over S keys (B·S·S·(q + v)), with past keys where given."""
    x, w = shape(0), shape(1)
    if x is None or w is None or len(x) != 3:
        return None
    sizes = list(attrs.get("qkv_hidden_sizes") or [w[1] // 3] * 3)
    past = shape(4)
    keys = x[1] + (past[3] if past is not None and len(past) == 5 else 0)
    return x[0] * x[1] * x[2] * w[1] + x[0] * x[1] * keys * (sizes[0] + sizes[2])


def _mha_macs(shape, attrs) -> int | None:
    """com.microsoft MultiHeadAttention with separate Q, K, V of rank 3: B·S·L·(q + v)."""
    q, k, v = shape(0), shape(1), shape(2)
    if q is None or k is None or v is None or not len(q) == len(k) == len(v) == 3:
        return None
    return q[0] * q[1] * k[1] * (q[2] + v[2])


def _gqa_macs(shape, attrs) -> int | None:
    """com.microsoft GroupQueryAttention: every query head over the past and new keys,
    B·S·(P + S)·2·num_heads·head_size (query packed with K and V when key is absent)."""
    q, k, past = shape(0), shape(1), shape(3)
    heads, kv_heads = attrs.get("num_heads"), attrs.get("kv_num_heads")
    if q is None or len(q) != 3 or not heads or not kv_heads:
        return None
    head = q[2] // (heads if k is not None else heads + 2 * kv_heads)
    keys = q[1] + (past[2] if past is not None and len(past) == 4 else 0)
    return 2 * q[0] * q[1] * keys * heads * head


_ATTENTION = {"Attention": _attention_macs, "MultiHeadAttention": _mha_macs,
              "GroupQueryAttention": _gqa_macs}  # fmt: skip


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    tensors = {}
    for graph in graphs(model.graph):
        tensors.update({t.name: t for t in graph.initializer})
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        tensors[node.output[0]] = a.t
    return tensors


def _proto(model: Countable) -> onnx.ModelProto:
    return skeleton(model) if isinstance(model, ir.Model) else model


def parameter_counts(model: Countable) -> dict[str, int]:
    """Elements of every float initializer (or Constant) that a node reads, and of every
    8- or 4-bit integer one read as a quantized weight (``quantization.WEIGHT_INPUT``), by name;
    subgraphs (If branches, Loop bodies) included."""
    model = _proto(model)
    tensors = _initializers(model)
    nodes = [node for graph in graphs(model.graph) for node in graph.node]
    read = {name for node in nodes for name in node.input}
    quantized = {node.input[i] for node in nodes
                 if (i := WEIGHT_INPUT.get(node.op_type)) is not None and i < len(node.input)}
    counts = {name: math.prod(t.dims) for name, t in tensors.items()
              if name in read and (t.data_type in FLOAT_TYPES
                                   or (t.data_type in QUANTIZED_TYPES and name in quantized))}  # fmt: skip
    for node in nodes:  # a packed block-quantized weight stands for K x N values
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft" and node.input[1] in tensors:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            counts[node.input[1]] = attrs["K"] * attrs["N"]
    return counts


def node_macs(model: Countable, dims: Dims | None = None) -> dict[str, int | None]:
    """MACs of every node by node name (None where shapes stay unknown), dims bound; nodes
    of subgraphs included. An onnx-ir model whose shapes decide them is counted from those
    (``_ir_macs``)."""
    if isinstance(model, ir.Model):
        macs = _ir_macs(model)
        if macs is not None:
            return {node.name: count for node, count in zip(model.graph, macs, strict=True)}
    model = _proto(model)
    inferred, shapes = _bound_shapes(model, dict(dims or {}))
    return {node.name: _node_macs(node, shapes)
            for graph in graphs(inferred.graph) for node in graph.node}  # fmt: skip


def _graph_macs(graph: onnx.GraphProto, shapes: dict[str, list[int] | None],
                macs_by_op: dict[str, int], unknown: list[str]) -> None:
    """Add ``graph``'s MACs by op type. An ``If`` runs one branch: the costlier one counts
    (an upper bound). Loop and Scan bodies run an unknown number of times: not counted."""
    for node in graph.node:
        if node.op_type == "If":
            branches = []
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    by_op: dict[str, int] = {}
                    missing: list[str] = []
                    _graph_macs(attr.g, shapes, by_op, missing)
                    branches.append((sum(by_op.values()), by_op, missing))
            if branches:
                _, by_op, missing = max(branches, key=lambda b: b[0])
                for op, macs in by_op.items():
                    macs_by_op[op] = macs_by_op.get(op, 0) + macs
                unknown.extend(missing)
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown.append(node.name or node.op_type)
        elif macs:
            macs_by_op[node.op_type] = macs_by_op.get(node.op_type, 0) + macs


def model_cost(model: Countable, dims: Dims | None = None) -> ModelCost:
    """Count parameters and MACs of ``model`` (not modified) with symbolic dims bound; an
    onnx-ir model whose shapes already give every count is counted from them (``_ir_cost``),
    any other on its skeleton with shapes inferred again."""
    if isinstance(model, ir.Model):
        cost = _ir_cost(model)
        if cost is not None:
            return cost
    model = _proto(model)
    inferred, shapes = _bound_shapes(model, dict(dims or {}))
    counts = parameter_counts(model)
    seen: set[str] = set()
    params_by_op: dict[str, int] = {}
    macs_by_op: dict[str, int] = {}
    unknown: list[str] = []
    for node in (n for graph in graphs(inferred.graph) for n in graph.node):
        for name in node.input:
            if name in counts and name not in seen:
                seen.add(name)
                params_by_op[node.op_type] = params_by_op.get(node.op_type, 0) + counts[name]
    _graph_macs(inferred.graph, shapes, macs_by_op, unknown)
    return ModelCost(sum(params_by_op.values()), sum(macs_by_op.values()), params_by_op,
                     macs_by_op, unknown)


def rewritten_cost(model: ir.Model, dims: Dims | None = None) -> ModelCost:
    """``model_cost`` of a model ``rewrite`` left its intermediate shapes on (``keep_shapes``),
    whose intermediate shapes are then cleared as ``rewrite`` clears them. Those shapes are
    the original's, with the kept size on every axis the plan prunes (``ShrinkPass``): the
    channel groups hold every axis whose size a removal changes. Counted from them where they
    decide the counts, else on the skeleton with shapes inferred again."""
    cost = _shrunk_cost(model)
    return cost if cost is not None else model_cost(model, dims)


def checked_cost(model: ir.Model, dims: Dims | None = None) -> tuple[ModelCost, onnx.ModelProto]:
    """``rewritten_cost`` and the skeleton of ``model`` as it leaves it, made once for the
    count (where the shapes do not decide it) and for ``onnx.checker``."""
    cost = _shrunk_cost(model)
    proto = skeleton(model)
    return (cost if cost is not None else model_cost(proto, dims)), proto


def _shrunk_cost(model: ir.Model) -> ModelCost | None:
    """The count from the shapes ``rewrite`` kept, where they decide it; the intermediate
    shapes are cleared either way."""
    cost = _ir_cost(model)
    drop_intermediate_shapes(model, keep_custom=False)
    return cost


def _static(value: ir.Value | None) -> list[int] | None:
    shape = None if value is None else value.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return list(shape)


def _ir_tensors(graph: ir.Graph) -> dict[str, ir.TensorProtocol]:
    """Initializers and Constant values of ``graph`` by name (``_initializers`` on the IR)."""
    tensors: dict[str, ir.TensorProtocol] = {
        name: v.const_value for name, v in graph.initializers.items() if v.const_value is not None}
    for node in graph:
        attr = node.attributes.get("value") if node.op_type == "Constant" else None
        if attr is not None and attr.type == ir.AttributeType.TENSOR and node.outputs[0].name:
            tensors[node.outputs[0].name] = attr.value
    return tensors


def _ir_macs(model: ir.Model) -> list[int] | None:
    """MACs of every node of ``model``'s graph, in graph order, from the shapes its values
    carry, when they decide them: no subgraphs, every graph input static (so no dim is left to
    bind) and static shapes at every contraction (a working model after ``normalize``); else
    None. No proto is written and nothing is inferred again."""
    graph = model.graph
    if any(_static(v) is None for v in graph.inputs):
        return None
    nodes = list(graph)
    if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
           for node in nodes for a in node.attributes.values()):  # fmt: skip
        return None
    shapes: dict[str, list[int] | None] = {
        name: list(t.shape) for name, t in _ir_tensors(graph).items() if t.shape is not None}
    for value in (*graph.inputs, *(o for n in nodes for o in n.outputs)):
        if value is not None and value.name and value.name not in shapes:
            shapes[value.name] = _static(value)
    macs = []
    for node in nodes:
        count = _macs(node.op_type, node.domain, _names(node.inputs), _names(node.outputs),
                      {k: a.value for k, a in node.attributes.items()}, shapes)  # fmt: skip
        if count is None:
            return None
        macs.append(count)
    return macs


def _names(values: Sequence[ir.Value | None]) -> list[str]:
    return [v.name if v is not None else "" for v in values]


def _ir_cost(model: ir.Model) -> ModelCost | None:
    """The cost from the shapes ``model``'s values carry (``_ir_macs``), as ``model_cost``
    counts it on the skeleton; None where those shapes do not decide it."""
    macs = _ir_macs(model)
    if macs is None:
        return None
    nodes = list(model.graph)
    tensors = _ir_tensors(model.graph)
    names = [_names(node.inputs) for node in nodes]
    quantized = {ins[i] for node, ins in zip(nodes, names, strict=True)
                 if (i := WEIGHT_INPUT.get(node.op_type)) is not None and i < len(ins)}  # fmt: skip
    counts = {name: math.prod(t.shape) for name, t in tensors.items()
              if int(t.dtype) in FLOAT_TYPES or (t.dtype in QUANTIZED_TYPES and name in quantized)}  # fmt: skip
    for node, ins in zip(nodes, names, strict=True):  # a packed block-quantized weight: K x N
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft" and ins[1] in tensors:
            counts[ins[1]] = node.attributes["K"].value * node.attributes["N"].value
    params_by_op: dict[str, int] = {}
    macs_by_op: dict[str, int] = {}
    seen: set[str] = set()
    for node, ins, count in zip(nodes, names, macs, strict=True):
        if count:
            macs_by_op[node.op_type] = macs_by_op.get(node.op_type, 0) + count
        for name in ins:
            if name in counts and name not in seen:
                seen.add(name)
                params_by_op[node.op_type] = params_by_op.get(node.op_type, 0) + counts[name]
    return ModelCost(sum(params_by_op.values()), sum(macs_by_op.values()), params_by_op,
                     macs_by_op, [])

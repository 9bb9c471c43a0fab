"""Build the channel graph of a model by running every node's channel rule.

The working model is first normalised (unique names, Constant nodes lifted to initializers,
accidentally shared constants untied, shapes inferred). Then every node of the main graph
declares its dims through its rule; what no rule declares is blocked, as are the model's
inputs and outputs, values captured by subgraphs, and channel sizes that flow into shape
computations no rule binds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, NameFixPass

from onnxprune import rules
from onnxprune.channel_graph import ChannelGraph, Dim, Reason
from onnxprune.graph_values import all_values, analysed_graphs, analysed_nodes, branches
from onnxprune.model_io import LOADED_INFERENCE
from onnxprune.passes.fold_constants import FoldShapeConstantsPass
from onnxprune.passes.untie import UntieRecord, UntieSharedConstantsPass
from onnxprune.rules.context import RuleContext, _RankUnknown
from onnxprune.shape_inference import infer_shapes
from onnxprune.shape_refine import contrib_gemm_shapes, refine_reshape_shapes
from onnxprune.shape_values import (
    SHAPE_ARITHMETIC,
    SIZE_COMBINERS,
    int_vector,
    is_size_guard,
    shape_entries,
    sizes_in,
)
from onnxprune.symbolic_shapes import complete_shapes

# (op type, input index) whose rules bind every entry of the shape vector they read.
BINDING_SHAPE_INPUTS = {("Reshape", 1), ("Expand", 1), ("ConstantOfShape", 0), ("Resize", 3)}


@dataclass
class Analysis:
    """The normalised working model and its channel graph."""

    model: ir.Model
    graph: ChannelGraph
    opset: int
    untied: dict[str, list[str]] = field(default_factory=dict)
    unknown_ops: Counter = field(default_factory=Counter)
    tensor_blocks: dict[str, list[Reason]] = field(default_factory=dict)
    #: one Dim per (tensor, axis), shared by the rule contexts
    interned: dict[tuple[str, int], Dim] = field(default_factory=dict, repr=False)

    def value(self, name: str) -> ir.Value | None:
        return self.values.get(name)

    @cached_property
    def nodes(self) -> dict[str, ir.Node]:
        """Nodes of the main graph and of If branches by name (unique after normalisation)."""
        return {node.name: node for node in analysed_nodes(self.model.graph)}

    @cached_property
    def values(self) -> dict[str, ir.Value]:
        """Every named value of the working model (read after normalisation)."""
        return all_values(self.model.graph)


def normalize(model: ir.Model) -> UntieRecord:
    """Prepare a working copy in place: names, lifted constants, untied constants, shapes."""
    loaded = model.meta.pop(LOADED_INFERENCE, None)  # of the file's graph, as it still is
    for node in model.graph:  # optimizers write contrib ops without importing their domain
        if node.domain not in ("", "ai.onnx") and node.domain not in model.opset_imports:
            model.opset_imports[node.domain] = 1
            loaded = None
    renamed = NameFixPass()(model).modified
    lifted = LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model).modified
    infer_shapes(model, None if renamed or lifted else loaded)
    record = UntieRecord()
    # Concat axes made positive and static sizes folded, then one inference for both (what a
    # folded value feeds may get a static shape); sizes that only the positive axes make
    # static are folded after it
    stale = _positive_concat_axes(model)
    if _fold(model, record) or stale:
        infer_shapes(model)
        if stale and _fold(model, record):
            infer_shapes(model)
    refine_reshape_shapes(model)
    complete_shapes(model)
    if contrib_gemm_shapes(model):
        infer_shapes(model)  # what reads the QGemm output gets its shapes too
    return record


def _fold(model: ir.Model, record: UntieRecord) -> bool:
    """Fold static sizes into constants and untie shared ones (copies keep their values'
    shapes); True if anything was folded."""
    folded = FoldShapeConstantsPass()(model).modified
    UntieSharedConstantsPass(record)(model)
    return folded


def _positive_concat_axes(model: ir.Model) -> bool:
    """Concat axis -k of rank-r inputs becomes r - k (the same axis): data propagation in ONNX
    and onnxruntime shape inference follows shape vectors joined on axis 0 only (paddle2onnx
    writes -1). True if any changed."""
    changed = False
    for node in model.graph:
        axis = node.attributes.get("axis")
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or axis is None:
            continue
        ranks = {len(v.shape) for v in node.inputs if v is not None and v.shape is not None}
        if axis.value < 0 and len(ranks) == 1:
            node.attributes["axis"] = ir.AttrInt64("axis", axis.value + ranks.pop())
            changed = True
    return changed


def model_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def analyze(
    model: ir.Model, *, progress: Callable[[int, int], None] | None = None
) -> Analysis:
    """Normalise ``model`` in place and build its channel graph."""
    untied = normalize(model)
    opset = model_opset(model)
    analysis = Analysis(model, ChannelGraph(), opset, untied.copies)
    nodes = analysed_nodes(model.graph)
    for i, node in enumerate(nodes):
        _apply_rule(analysis, node)
        if progress is not None:
            progress(i + 1, len(nodes))
    _block_interface(analysis)
    _block_subgraph_captures(analysis)
    _block_unbound_size_reads(analysis)
    return analysis


def _apply_rule(analysis: Analysis, node: ir.Node) -> None:
    ctx = RuleContext(node, analysis.opset, analysis.interned)
    rule = rules.lookup(node.domain, node.op_type, analysis.opset)
    op_name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    try:
        if rule is None:
            analysis.unknown_ops[op_name] += 1
            ctx.block(f"no channel rule for op '{op_name}'")
        else:
            rule(node, ctx)
    except _RankUnknown as exc:
        ctx = RuleContext(node, analysis.opset, analysis.interned)
        ctx.block(str(exc))
    except Exception as exc:  # a rule that cannot prove its mapping must not crash analysis
        ctx = RuleContext(node, analysis.opset, analysis.interned)
        ctx.block(f"rule could not map this node ({type(exc).__name__}: {exc})")
    _merge(analysis, node, ctx, op_name)


def _merge(analysis: Analysis, node: ir.Node, ctx: RuleContext, op_name: str) -> None:
    graph = analysis.graph
    declared = {(d.tensor, d.axis) for d in ctx.declared if not d.part}
    sized = {(d.tensor, d.axis) for d in ctx.sizes if not d.part}
    for value in (*node.inputs, *node.outputs):
        if value is None:
            continue
        rank = ctx.rank(value)
        if rank is None:
            continue
        for axis in range(rank):
            if (value.name, axis) not in declared:
                ctx.block_dim(ctx.dim(value, axis),
                              f"the {op_name} rule does not map axis {axis} of '{value.name}'")
            elif (value.name, axis) not in sized:  # declared through a Dim made by hand
                ctx.dim(value, axis)
    sizes = ctx.sizes
    graph.add_dims(sizes.items())
    graph.add_dims((d, sizes.get(d)) for a, b, _, _ in ctx.relations for d in (a, b))
    for a, b, a_pos, b_pos in ctx.relations:
        graph.relate(a, b, a_pos, b_pos)
    reasons: dict[str, Reason] = {}  # one per sentence: a Conv blocks six axes alike

    def reason(text: str) -> Reason:
        found = reasons.get(text)
        if found is None:
            found = reasons[text] = Reason(node.name, op_name, text)
        return found

    for dim in ctx.produced:
        graph.info(dim).produced = True
    for dim, consumer in ctx.consumers:
        graph.info(dim).consumers.append(consumer)
    for dim, text in ctx.blocked:
        graph.add_dim(dim, sizes.get(dim)).blocked.append(reason(text))
    for dim, text in ctx.approximate_dims:
        graph.info(dim).approximate.append(reason(text))
    graph.blocks.extend(ctx.blocks)
    for tensor, text in ctx.tensor_blocks:
        analysis.tensor_blocks.setdefault(tensor, []).append(reason(text))


def _block_value(analysis: Analysis, value: ir.Value, reason: Reason) -> None:
    if value.shape is None:
        analysis.tensor_blocks.setdefault(value.name, []).append(reason)
        return
    for axis, size in enumerate(value.shape):
        dim = Dim(value.name, axis)
        analysis.graph.add_dim(dim, size if isinstance(size, int) else None).blocked.append(reason)


def _block_interface(analysis: Analysis) -> None:
    graph = analysis.model.graph
    for value in graph.inputs:
        _block_value(analysis, value, Reason(value.name, "model input", "its shape is fixed"))
    for value in graph.outputs:
        _block_value(analysis, value, Reason(value.name, "model output", "its shape is fixed"))


def _block_subgraph_captures(analysis: Analysis) -> None:
    """A value read inside a subgraph the analysis does not enter (a Loop or Scan body, an
    If whose branches lack shapes) is blocked: what the body does with it is not mapped.
    Reads are every name the body (and its own subgraphs) uses without defining it."""
    for graph in analysed_graphs(analysis.model.graph):
        for node in graph:
            if branches(node):
                continue
            for attr in node.attributes.values():
                if not isinstance(attr.value, ir.Graph):
                    continue
                reason = Reason(node.name, node.op_type,
                                f"read inside the {node.op_type} subgraph (not analysed)")
                for name in sorted(_captured_names(attr.value)):
                    value = analysis.values.get(name)
                    if value is not None:
                        _block_value(analysis, value, reason)


def _captured_names(graph: ir.Graph) -> set[str]:
    """Names a subgraph (and its own subgraphs) reads without defining them."""
    defined = {v.name for v in graph.inputs} | set(graph.initializers)
    used = {v.name for v in graph.outputs}
    for node in graph:
        defined |= {v.name for v in node.outputs if v is not None}
        used |= {v.name for v in node.inputs if v is not None}
        for attr in node.attributes.values():
            if isinstance(attr.value, ir.Graph):
                used |= _captured_names(attr.value)
    return used - defined


def _block_unbound_size_reads(analysis: Analysis) -> None:
    """Sizes read by Shape may only flow into shape inputs whose rules bind them."""
    for node in analysis.model.graph:
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx"):
            continue
        data = node.inputs[0]
        frontier = [node.outputs[0]]
        seen: set[int] = set()
        while frontier:
            value = frontier.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            for user, index in value.uses():
                if is_size_guard(user, index):
                    continue
                if _follows_sizes(user, index):
                    frontier.extend(v for v in user.outputs if v is not None)
                elif (user.op_type, index) not in BINDING_SHAPE_INPUTS:
                    _block_read_axes(analysis, data, value, user)


def _follows_sizes(user: ir.Node, index: int) -> bool:
    """The user's output is shape arithmetic over the sizes at input ``index`` (see
    :func:`~onnxprune.shape_values.shape_entries`), checked again where it is bound."""
    op = user.op_type
    if user.domain not in ("", "ai.onnx") or op == "Shape":
        return False
    if op in SHAPE_ARITHMETIC:
        return True
    out = user.outputs[0] if user.outputs else None
    vector = out is not None and out.shape is not None and len(out.shape) <= 1
    return vector and (
        op in SIZE_COMBINERS
        or (op == "Reshape" and index == 0)
        or (op == "Where" and index == 2 and _guarded_by(user, user.inputs[2]))
        or (op == "Mul" and int_vector(user.inputs[1 - index]) is not None)
    )  # fmt: skip


def _guarded_by(where: ir.Node, sizes: ir.Value) -> bool:
    test = where.inputs[0].producer() if where.inputs[0] is not None else None
    return test is not None and any(
        v is sizes and is_size_guard(test, i) for i, v in enumerate(test.inputs)
    )


def _block_read_axes(analysis: Analysis, data: ir.Value, value: ir.Value, user: ir.Node) -> None:
    reason = Reason(
        user.name, user.op_type, f"computes with the size of '{data.name}', which pruning changes"
    )
    entries = shape_entries(value)
    if entries is None:
        _block_value(analysis, data, reason)
        return
    for entry in entries:
        for size in sizes_in(entry):
            if size.tensor == data.name:
                analysis.graph.add_dim(Dim(data.name, size.axis), None).blocked.append(reason)

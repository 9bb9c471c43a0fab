"""Fold the mean contribution of removed channels into the consumer's bias (FLAP).

A consumer ``y = x W (+ b)`` that loses input channels c (MatMul/Gemm with a constant weight, or
an unpadded Conv with ``group`` 1, whose kernel positions all sum the same constant) gets ``b' =
b + sum_c mean(x_c) W[c, :]`` restricted to its kept outputs: the pruned model then equals the
original with x_c replaced by its calibration mean, and the oracle's masked model fills removed
channels with that mean, so verification stays exact. A bias is added (Gemm's C, Conv's B, an
Add after MatMul) where none exists.

The pass runs after :class:`~onnxprune.passes.shrink.ShrinkPass`; it reads the removed rows
from the original weights it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from onnxprune.channel_graph import Dim
from onnxprune.graph_values import analysed_nodes
from onnxprune.plan import Mask, RemovalPlan
from onnxprune.shape_values import constant_array
from onnxprune.statistics import ChannelStats, Key


def weight_axes(node: ir.Node) -> tuple[int, int] | None:
    """(input-channel axis, output axis) of a consumer's constant weight where every input
    channel meets its own weight slice (MatMul/Gemm, Conv with ``group`` 1, any kernel), else
    None. Such a consumer is linear in each input channel, so a regression of removed
    channels on kept ones folds into its kept weights (refit)."""
    if len(node.inputs) < 2 or node.inputs[1] is None or constant_array(node.inputs[1]) is None:
        return None
    w_shape = node.inputs[1].shape
    if w_shape is None:
        return None
    if node.op_type == "MatMul" and len(w_shape) == 2:
        return 0, 1
    if node.op_type == "Gemm" and len(w_shape) == 2:
        trans = node.attributes.get("transB")
        return (1, 0) if trans is not None and trans.value else (0, 1)
    if node.op_type == "Conv" and len(w_shape) >= 3:
        group = node.attributes.get("group")
        if group is None or group.value == 1:
            return 1, 0
    return None


def input_axis(node: ir.Node) -> int | None:
    """The channel axis of a weighted consumer's data input (Conv 1, Gemm 1 or 0 with
    ``transA``, MatMul the last), None where its rank is unknown."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "Gemm":
        trans = node.attributes.get("transA")
        return 0 if trans is not None and trans.value else 1
    shape = node.inputs[0].shape
    return None if shape is None else len(shape) - 1


def bias_foldable(node: ir.Node) -> bool:
    """A constant input channel adds the same vector at every output position: MatMul/Gemm,
    and a Conv without padding (each output sums the whole kernel window). A padded Conv sees
    zeros at the borders, so a constant there is not a bias."""
    if weight_axes(node) is None:
        return False
    if node.op_type != "Conv":
        return True
    pads = node.attributes.get("pads")
    auto_pad = node.attributes.get("auto_pad")
    padded = auto_pad is not None and auto_pad.value not in ("NOTSET", "VALID")
    kernel = list(node.inputs[1].shape[2:])
    return not (pads is not None and any(pads.value)) and not (
        padded and not all(k == 1 for k in kernel)
    )


def compensable(node: ir.Node, mask: Mask, *, fold_bias: bool = True) -> bool:
    """The mask sits on the data input of a consumer whose weight can absorb the removed
    channels (and, with ``fold_bias``, their constant part as a bias)."""
    if mask.consumer.input_index != 0 or weight_axes(node) is None:
        return False
    if fold_bias and not bias_foldable(node):
        return False
    axis = input_axis(node)
    return axis is not None and mask.consumer.axis == axis


def compensable_masks(
    model: ir.Model,
    plan: RemovalPlan,
    stats: Mapping[Key, ChannelStats],
    *,
    fold_bias: bool = True,
) -> Iterator[tuple[int, Mask, ir.Node, ChannelStats]]:
    """(mask index, mask, consumer, statistics of its input) for every mask whose consumer
    can absorb the removed channels (see :func:`compensable`) and whose input was
    calibrated."""
    nodes = {node.name: node for node in analysed_nodes(model.graph)}
    for index, mask in enumerate(plan.masks):
        node = nodes.get(mask.consumer.node)
        if node is None or not compensable(node, mask, fold_bias=fold_bias):
            continue
        channel = stats.get((node.inputs[0].name, mask.consumer.axis))
        if channel is not None and channel.sum.size == mask.size:
            yield index, mask, node, channel


def compensation_fills(
    model: ir.Model, plan: RemovalPlan, stats: Mapping[Key, ChannelStats]
) -> dict[int, np.ndarray]:
    """Calibration means of the removed channels at every consumer that can absorb them."""
    return {index: channel.mean[mask.removed]
            for index, mask, _, channel in compensable_masks(model, plan, stats)}  # fmt: skip


class CompensatePass(InPlacePass):
    """Add ``sum_c fill_c W[c, kept]`` to the bias of every consumer with a fill in
    ``plan.fills``; ``weights`` holds the unsliced weights of those consumers."""

    def __init__(self, plan: RemovalPlan, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.plan = plan
        self.weights = weights

    def call(self, model: ir.Model) -> PassResult:
        nodes = {node.name: node for node in analysed_nodes(model.graph)}
        deltas: dict[str, np.ndarray] = {}
        for index, fill in self.plan.fills.items():
            mask = self.plan.masks[index]
            node = nodes[mask.consumer.node]
            w_name = node.inputs[1].name
            in_axis, out_axis = weight_axes(node)
            w = np.moveaxis(self.weights[w_name], (in_axis, out_axis), (0, 1)).astype(np.float64)
            w = w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2)  # 1x1 kernels
            delta = fill.astype(np.float64) @ w[mask.removed]
            kept = self.plan.kept.get(Dim(w_name, out_axis))
            if kept is not None:
                delta = delta[kept]
            deltas[node.name] = deltas.get(node.name, 0) + delta
        for name, delta in deltas.items():
            _add_bias(model.graph, nodes[name], delta)
        return PassResult(model, bool(deltas))


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, shape=ir.Shape(array.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))  # fmt: skip
    value.const_value = ir.Tensor(array, name=name)
    graph.register_initializer(value)
    return value


def _add_bias(graph: ir.Graph, node: ir.Node, delta: np.ndarray) -> None:
    """Add ``delta`` to the bias of ``node``'s output channels (creating one if needed)."""
    y = node.outputs[0]
    dtype = node.inputs[1].const_value.numpy().dtype
    if node.op_type in ("Gemm", "Conv"):
        bias_index = 2
        old = node.inputs[bias_index] if len(node.inputs) > bias_index else None
        base = constant_array(old) if old is not None else None
        if old is not None and (base is None or base.ndim != 1):
            return _add_after(graph, node, delta.astype(dtype))
        new = (0 if base is None else base.astype(np.float64)) + delta
        value = _constant(graph, f"{node.name}_compensated_bias", new.astype(dtype))
        if len(node.inputs) <= bias_index:
            node.resize_inputs(bias_index + 1)
        node.replace_input_with(bias_index, value)
        return None
    uses = list(y.uses())
    if len(uses) == 1:
        add, index = uses[0]
        other = add.inputs[1 - index] if add.op_type == "Add" and len(add.inputs) == 2 else None
        base = constant_array(other) if other is not None else None
        if base is not None and base.shape == delta.shape and len(other.uses()) == 1:
            value = _constant(graph, f"{node.name}_compensated_bias",
                              (base.astype(np.float64) + delta).astype(dtype))  # fmt: skip
            add.replace_input_with(1 - index, value)
            return None
    return _add_after(graph, node, delta.astype(dtype))


def _add_after(graph: ir.Graph, node: ir.Node, delta: np.ndarray) -> None:
    y = node.outputs[0]
    shape = [1] * (len(y.shape) if y.shape is not None else 2)
    axis = 1 if node.op_type in ("Conv", "Gemm") else len(shape) - 1
    shape[axis] = delta.size
    bias = _constant(graph, f"{node.name}_compensation", delta.reshape(shape))
    users = list(y.uses())
    add = ir.Node("", "Add", [y, bias], name=f"{node.name}_compensation_add", num_outputs=1)
    out = add.outputs[0]
    out.type, out.shape = y.type, y.shape
    graph.insert_after(node, add)
    for user, index in users:
        user.replace_input_with(index, out)
    name = y.name
    y.name = f"{name}_uncompensated"
    out.name = name  # a graph output keeps its name
    if y in graph.outputs:
        graph.outputs[graph.outputs.index(y)] = out

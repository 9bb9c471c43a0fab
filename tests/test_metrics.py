"""MACs and parameters: contractions of every kind count, unknown shapes are listed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs import model, weight
from onnxprune.api import analyze, prune
from onnxprune.metrics import _ir_cost, model_cost, node_macs, rewritten_cost
from onnxprune.rewrite import rewrite
from onnxprune.skeleton import skeleton


def test_einsum_counts_the_product_of_its_index_sizes():
    nodes = [helper.make_node("Einsum", ["x", "w"], ["y"], name="e", equation="bsd,df->bsf")]
    proto = model(nodes, {"x": [2, 5, 8]}, {"y": [2, 5, 3]}, {"w": weight(8, 3)}, opset=17)
    assert model_cost(proto).macs == 2 * 5 * 8 * 3


def test_quantized_matmul_counts_like_its_float_twin():
    nodes = [helper.make_node("MatMulInteger", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", TensorProto.UINT8, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
        initializer=[numpy_helper.from_array(np.ones((16, 8), np.uint8), "w")])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert model_cost(proto).macs == 4 * 16 * 8


def test_nodes_whose_shapes_stay_unknown_are_listed():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16]),
                     helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight(16, 8), "w")])  # fmt: skip
    cost = model_cost(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert cost.unknown == ["mm"] and cost.macs == 0


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["mnasnet0_5", "googlenet", "densenet121"])
def test_a_static_working_model_counts_from_its_shapes_what_its_skeleton_counts(name):
    """The working model after ``normalize`` is counted from the shapes its values carry
    (no proto, no inference): the same parameters and MACs, op by op and node by node, as
    its skeleton's count with every shape inferred again."""
    import zoo

    working = analyze(zoo.export(name, "torchscript")).analysis.model
    from_shapes = _ir_cost(working)
    assert from_shapes is not None
    assert from_shapes == model_cost(skeleton(working)) and from_shapes.macs > 0
    assert node_macs(working) == node_macs(skeleton(working))


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["mnasnet0_5", "googlenet", "densenet121"])
def test_a_rewritten_model_counts_from_its_kept_shapes_what_inference_counts(name):
    """A rewrite that keeps its shapes (the original's, with the kept sizes on the pruned
    axes) is counted from them: the same as its skeleton with every shape inferred again;
    its intermediate shapes are cleared afterwards as ``rewrite`` clears them."""
    import zoo

    result = prune(zoo.export(name, "torchscript"), ratio=0.5, verify=False)
    kept = rewrite(result.original, result.plan, check=False, keep_shapes=True)
    inferred = model_cost(skeleton(rewrite(result.original, result.plan, check=False)))
    assert _ir_cost(kept) is not None and inferred.macs < result.cost_before.macs
    assert rewritten_cost(kept) == inferred == result.cost_after
    assert kept.graph.node(0).outputs[0].shape is None


def test_a_symbolic_input_is_counted_at_the_bound_dims_not_from_its_shapes():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    proto = model(nodes, {"x": ["batch", 16]}, {"y": ["batch", 8]}, {"w": weight(16, 8)},
                  opset=17)  # fmt: skip
    working = ir.from_proto(proto)
    assert _ir_cost(working) is None
    assert model_cost(working, {"batch": 4}).macs == 4 * 16 * 8


@pytest.mark.zoo
def test_onnxruntime_fused_attention_counts_what_the_unfused_export_does():
    import transformer_zoo

    dims = {"batch": 1, "sequence": 16}
    plain = model_cost(onnx.load(transformer_zoo.export("bert", "torchscript")), dims)
    fused_proto = onnx.load(transformer_zoo.export_ort_optimized("bert"))
    fused = model_cost(fused_proto, dims)
    assert "Attention" in fused.macs_by_op and not fused.unknown
    assert fused.macs == plain.macs


def test_an_if_counts_its_costlier_branch():
    """then: x @ W1 (1x8 @ 8x16 = 128 MACs), else: x @ W2 (1x8 @ 8x32 = 256 MACs): one
    branch runs, the costlier one counts."""
    def branch(name: str, w: str, n: int) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", w], [f"{name}_y"], name=f"{name}_mm")], name, [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, n])])

    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="cond"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("then", "w1", 16),
                              else_branch=branch("else", "w2", 16 * 2))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero"),
         numpy_helper.from_array(np.ones((8, 16), np.float32), "w1"),
         numpy_helper.from_array(np.ones((8, 32), np.float32), "w2")])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cost = model_cost(proto)
    assert cost.macs == 256 and cost.macs_by_op == {"MatMul": 256}
    assert node_macs(proto)["then_mm"] == 128

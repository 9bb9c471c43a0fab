"""MACs and parameters: contractions of every kind count, unknown shapes are listed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs import model, weight
from onnxprune.metrics import model_cost


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
def test_onnxruntime_fused_attention_counts_what_the_unfused_export_does():
    import transformer_zoo

    dims = {"batch": 1, "sequence": 16}
    plain = model_cost(onnx.load(transformer_zoo.export("bert", "torchscript")), dims)
    fused_proto = onnx.load(transformer_zoo.export_ort_optimized("bert"))
    fused = model_cost(fused_proto, dims)
    assert "Attention" in fused.macs_by_op and not fused.unknown
    assert fused.macs == plain.macs

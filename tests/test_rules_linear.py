"""Gemm and MatMul rules: contraction consumed, weight columns produced."""

from __future__ import annotations

from onnx import helper

from graphs import assert_prunes_exactly, model, weight


def test_gemm_chain_with_transposed_weights():
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", alpha=0.5, beta=2.0),
    ]
    inits = {"w1": weight(12, 5), "b1": weight(12), "w2": weight(12, 3), "b2": weight(3)}
    proto = model(nodes, {"x": [2, 5]}, {"y": [2, 3]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    w1 = next(i for i in result.to_proto().graph.initializer if i.name == "w1")
    assert list(w1.dims) == [6, 5]


def test_batched_matmul_mlp():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
        helper.make_node("Tanh", ["hb"], ["t"], name="tanh"),
        helper.make_node("MatMul", ["t", "w2"], ["y"], name="down"),
    ]
    inits = {"w1": weight(4, 10), "b1": weight(10), "w2": weight(10, 4)}
    proto = model(nodes, {"x": [2, 3, 4]}, {"y": [2, 3, 4]}, inits)
    assert_prunes_exactly(proto, 0.4)


def test_weight_behind_transpose_is_sliced_through_it():
    """Dynamo exports Linear as MatMul(x, Transpose(W)); W is sliced, Transpose follows."""
    nodes = [
        helper.make_node("Transpose", ["w1"], ["w1t"], name="w1_t", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w1t"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="down"),
    ]
    inits = {"w1": weight(10, 4), "w2": weight(10, 4)}
    proto = model(nodes, {"x": [3, 4]}, {"y": [3, 4]}, inits)
    assert_prunes_exactly(proto, 0.5)

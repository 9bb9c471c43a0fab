"""The analysis: unknown ops block conservatively, interface and shared tensors are handled."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

import onnxprune
from graphs import assert_prunes_exactly, conv, model, weight
from onnxprune.errors import UnsupportedModelError


def test_unknown_custom_op_blocks_its_channels_and_the_rest_still_prunes():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Mystery", ["a"], ["m"], name="mystery", domain="com.example"),
        conv("c2", "m", "w2", "b2", "b"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        conv("c3", "r", "w3", None, "y"),
    ]
    inits = {
        "w1": weight(8, 3, 1, 1), "b1": weight(8), "w2": weight(8, 8, 1, 1), "b2": weight(8),
        "w3": weight(2, 8, 1, 1),
    }  # fmt: skip
    # Exporters of custom ops declare their output shapes; shape inference continues from there.
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits,
                  extra_opsets={"com.example": 1}, value_info={"m": [1, 8, 2, 2]})
    analysis = onnxprune.analyze(proto)
    assert analysis.analysis.unknown_ops == {"com.example.Mystery": 1}
    blocked = [g for g in analysis.groups if g.blocked and not g.interface_only()]
    assert len(blocked) == 1
    assert "no channel rule for op 'com.example.Mystery'" in str(blocked[0].blocked[0])
    assert [g.width for g in analysis.groups if g.prunable] == [8]
    # Prunable: w2 (rows), b2, w3 (columns) of 120 parameters; MACs of c2 and c3 of 416.
    share = analysis.prunable_cost_share()
    assert share["params"] == pytest.approx((64 + 8 + 16) / 120)
    assert share["macs"] == pytest.approx((256 + 64) / (96 + 256 + 64))
    # onnxruntime cannot run the custom op, so only an unverified prune is possible.
    with pytest.raises(UnsupportedModelError, match="cannot be verified"):
        onnxprune.prune(proto, ratio=0.5)
    result = onnxprune.prune(proto, ratio=0.5, verify=False)
    assert len(result.plan.removed) == 1 and result.verification is None
    w3 = next(i for i in result.to_proto().graph.initializer if i.name == "w3")
    assert list(w3.dims) == [2, 4, 1, 1]


def test_group_reaching_model_output_is_blocked():
    nodes = [conv("c1", "x", "w1", "b1", "y")]
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 8, 2, 2]},
                  {"w1": weight(8, 3, 1, 1), "b1": weight(8)})
    (group,) = onnxprune.analyze(proto).groups
    assert group.interface_only()


def test_accidentally_shared_zero_bias_is_untied_per_reader():
    """Exporters deduplicate equal tensors: one zero bias read by two unrelated convs."""
    nodes = [
        conv("c1", "x", "w1", "zeros", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", "zeros", "b"),
        helper.make_node("Relu", ["b"], ["s"], name="relu2"),
        conv("c3", "s", "w3", None, "y"),
    ]
    inits = {
        "w1": weight(8, 3, 1, 1), "w2": weight(8, 8, 1, 1), "w3": weight(2, 8, 1, 1),
        "zeros": np.zeros(8, np.float32),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5, min_groups=2)
    assert "zeros" in result.analysis.analysis.untied


def test_really_shared_weights_couple_their_readers():
    """ALBERT-style sharing: one weight used twice couples both uses into one group."""
    nodes = [
        helper.make_node("MatMul", ["x", "w_in"], ["h0"], name="in"),
        helper.make_node("MatMul", ["h0", "w_up"], ["u1"], name="up1"),
        helper.make_node("Relu", ["u1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "w_down"], ["h1"], name="down1"),
        helper.make_node("MatMul", ["h1", "w_up"], ["u2"], name="up2"),
        helper.make_node("Relu", ["u2"], ["a2"], name="relu2"),
        helper.make_node("MatMul", ["a2", "w_down"], ["y"], name="down2"),
    ]
    inits = {"w_in": weight(4, 6), "w_up": weight(6, 10), "w_down": weight(10, 6)}
    proto = model(nodes, {"x": [2, 4]}, {"y": [2, 6]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    assert not result.analysis.analysis.untied
    shared = [g for g in result.groups if g.prunable and g.width == 10]
    assert len(shared) == 1 and {"u1", "u2"} <= {d.tensor for d in shared[0].members}


def test_tied_embedding_and_output_projection_prune_together():
    """Gather(E, ids) feeds a model whose logits are MatMul(h, Eᵀ): E's hidden axis is one
    group across both uses, and it reaches the logits only through the contraction."""
    ids = helper.make_tensor_value_info("ids", 7, [1, 5])
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "w1"], ["h"], name="mlp_up"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="mlp_down"),
        helper.make_node("Add", ["e", "o"], ["res"], name="residual"),
        helper.make_node("Transpose", ["emb"], ["emb_t"], name="tie", perm=[1, 0]),
        helper.make_node("MatMul", ["res", "emb_t"], ["logits"], name="lm_head"),
    ]
    inits = {"emb": weight(11, 8), "w1": weight(8, 12), "w2": weight(12, 8)}
    graph = helper.make_graph(
        nodes, "tied", [ids],
        [helper.make_tensor_value_info("logits", 1, [1, 5, 11])],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    analysis = onnxprune.analyze(proto)
    hidden = [g for g in analysis.groups if g.width == 8]
    assert len(hidden) == 1 and hidden[0].prunable
    assert {"emb", "emb_t", "e", "res"} <= {d.tensor for d in hidden[0].members}
    feed = [{"ids": np.array([[1, 2, 3, 4, 10]], dtype=np.int64)}]
    result = onnxprune.prune(proto, ratio=0.5, inputs=feed)
    assert result.verification.passed and len(result.plan.removed) == 2

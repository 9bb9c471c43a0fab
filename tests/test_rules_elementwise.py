"""Elementwise rules: residual coupling, per-channel constants, squeeze-excitation."""

from __future__ import annotations

from onnx import helper

from graphs import assert_prunes_exactly, conv, model, weight


def test_residual_add_couples_both_branches():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", "b2", "b"),
        helper.make_node("Add", ["a", "b"], ["s"], name="residual"),
        conv("c3", "s", "w3", None, "y"),
    ]
    inits = {
        "w1": weight(8, 3, 1, 1), "b1": weight(8), "w2": weight(8, 8, 1, 1), "b2": weight(8),
        "w3": weight(2, 8, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    (group,) = [g for g in result.groups if g.prunable]
    tensors = {d.tensor for d in group.members}
    assert {"a", "b", "s", "w1", "w2", "w3"} <= tensors


def test_per_channel_mul_and_prelu_slopes_are_sliced():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Mul", ["a", "scale"], ["m"], name="scale"),
        helper.make_node("PRelu", ["m", "slope"], ["p"], name="prelu"),
        helper.make_node("Sub", ["p", "shift"], ["s"], name="shift"),
        conv("c2", "s", "w2", None, "y"),
    ]
    inits = {
        "w1": weight(8, 3, 1, 1), "b1": weight(8), "scale": weight(1, 8, 1, 1),
        "slope": weight(8, 1, 1), "shift": weight(8, 1, 1), "w2": weight(2, 8, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    slope = next(i for i in result.to_proto().graph.initializer if i.name == "slope")
    assert list(slope.dims) == [4, 1, 1]


def test_squeeze_excitation_prunes_the_bottleneck_and_the_channels():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
        conv("se1", "p", "ws1", "bs1", "h"),
        helper.make_node("Relu", ["h"], ["hr"], name="se_relu"),
        conv("se2", "hr", "ws2", "bs2", "g"),
        helper.make_node("HardSigmoid", ["g"], ["gate"], name="gate"),
        helper.make_node("Mul", ["a", "gate"], ["m"], name="excite"),
        conv("c2", "m", "w2", None, "y"),
    ]
    inits = {
        "w1": weight(8, 3, 1, 1), "b1": weight(8), "ws1": weight(4, 8, 1, 1), "bs1": weight(4),
        "ws2": weight(8, 4, 1, 1), "bs2": weight(8), "w2": weight(2, 8, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 3, 3]}, {"y": [1, 2, 3, 3]}, inits)
    assert_prunes_exactly(proto, 0.5, min_groups=2)

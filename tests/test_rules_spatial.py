"""Pooling, reductions, Pad and Resize: spatial axes change, channels pass through."""

from __future__ import annotations

import numpy as np
from onnx import helper

import onnxprune
from graphs import assert_prunes_exactly, conv, model, weight


def _between(*middle, out_shape=(1, 2, 4, 4), inits=None, opset=17):
    """c1 (8 channels) -> middle nodes (reading 'a', writing 'm') -> c2 -> y."""
    nodes = [conv("c1", "x", "w1", "b1", "a"), *middle, conv("c2", "m", "w2", None, "y")]
    base = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "w2": weight(2, 8, 1, 1)}
    return model(nodes, {"x": [1, 3, 4, 4]}, {"y": list(out_shape)}, {**base, **(inits or {})},
                 opset=opset)


def test_max_and_average_pool():
    proto = _between(
        helper.make_node("MaxPool", ["a"], ["p"], name="max", kernel_shape=[2, 2]),
        helper.make_node("AveragePool", ["p"], ["m"], name="avg", kernel_shape=[1, 1]),
        out_shape=(1, 2, 3, 3),
    )
    assert_prunes_exactly(proto)


def test_reduce_mean_over_space_passes_channels():
    proto = _between(
        helper.make_node("ReduceMean", ["a", "axes"], ["m"], name="mean", keepdims=1),
        out_shape=(1, 2, 1, 1), inits={"axes": np.array([2, 3], dtype=np.int64)}, opset=18,
    )
    assert_prunes_exactly(proto)


def test_reduce_sum_over_channels_consumes_exactly():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("ReduceSum", ["a", "axes"], ["y"], name="sum", keepdims=1),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "axes": np.array([1], dtype=np.int64)}
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 1, 2, 2]}, inits)
    assert_prunes_exactly(proto)


def test_reduce_max_over_channels_is_approximate():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("ReduceMax", ["a"], ["y"], name="max", axes=[1], keepdims=1),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8)}
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 1, 2, 2]}, inits)
    (group,) = onnxprune.analyze(proto).groups
    assert group.approximate and not group.blocked


def test_spatial_pad_and_resize_pass_channels():
    proto = _between(
        helper.make_node("Pad", ["a", "pads"], ["p"], name="pad"),
        helper.make_node("Resize", ["p", "", "scales"], ["m"], name="up", mode="nearest"),
        out_shape=(1, 2, 12, 12),
        inits={
            "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64),
            "scales": np.array([1, 1, 2, 2], dtype=np.float32),
        },
    )
    assert_prunes_exactly(proto)


def test_padding_the_channel_axis_blocks_it():
    proto = _between(
        helper.make_node("Pad", ["a", "pads"], ["m"], name="pad"),
        inits={"pads": np.array([0, 1, 0, 0, 0, 0, 0, 0], dtype=np.int64),
               "w2": weight(2, 9, 1, 1)},
    )
    (group,) = [g for g in onnxprune.analyze(proto).groups if not g.interface_only()]
    assert group.blocked and "padded axis" in str(group.blocked)

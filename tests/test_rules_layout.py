"""Layout rules: Flatten/Reshape blocks, channel shuffle, Transpose, Squeeze/Unsqueeze."""

from __future__ import annotations

import numpy as np
from onnx import helper

from graphs import assert_prunes_exactly, conv, model, weight


def test_flatten_channels_by_space_into_gemm():
    nodes = [
        conv("c1", "x", "w1", "b1", "a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "wf": weight(5, 8 * 4 * 4), "bf": weight(5)}
    proto = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 5]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    wf = next(i for i in result.to_proto().graph.initializer if i.name == "wf")
    assert list(wf.dims) == [5, 4 * 4 * 4]
    (group,) = [g for g in result.groups if g.prunable]
    assert group.n_atoms == 8


def test_reshape_with_literal_target_is_rewritten():
    shape = np.array([1, -1], dtype=np.int64)
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Reshape", ["a", "shape"], ["f"], name="view"),
        helper.make_node("MatMul", ["f", "wm"], ["y"], name="fc"),
    ]
    inits = {"w1": weight(6, 3, 1, 1), "b1": weight(6), "shape": shape, "wm": weight(6 * 9, 2)}
    proto = model(nodes, {"x": [1, 3, 3, 3]}, {"y": [1, 2]}, inits)
    assert_prunes_exactly(proto, 0.5)


def shuffle_block(groups: int = 2, half: int = 6):
    """Two conv branches, concatenated, channel-shuffled, then a conv reading the result."""
    c = 2 * half
    nodes = [
        conv("ca", "x", "wa", "ba", "a"),
        conv("cb", "x", "wb", "bb", "b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Reshape", ["cat", "s1"], ["r1"], name="split_groups"),
        helper.make_node("Transpose", ["r1"], ["t"], name="swap", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "s2"], ["r2"], name="merge_groups"),
        conv("cy", "r2", "wy", None, "y"),
    ]
    inits = {
        "wa": weight(half, 3, 1, 1), "ba": weight(half), "wb": weight(half, 3, 1, 1),
        "bb": weight(half), "wy": weight(4, c, 1, 1),
        "s1": np.array([1, groups, c // groups, 2, 2], dtype=np.int64),
        "s2": np.array([1, c, 2, 2], dtype=np.int64),
    }  # fmt: skip
    return model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 4, 2, 2]}, inits)


def test_channel_shuffle_prunes_along_channels_per_group():
    result = assert_prunes_exactly(shuffle_block(), 0.5)
    s1 = next(i for i in result.to_proto().graph.initializer if i.name == "s1")
    from onnx import numpy_helper

    assert numpy_helper.to_array(s1).tolist() == [1, 2, 3, 2, 2]
    (group,) = [g for g in result.groups if g.prunable]
    # One canonical channel = position j of both halves (the shuffle interleaves them).
    assert group.n_atoms == 6


def test_transpose_to_channels_last_and_back():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Transpose", ["a"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["nhwc", "wm"], ["m"], name="pointwise"),
        helper.make_node("Transpose", ["m"], ["y"], name="to_nchw", perm=[0, 3, 1, 2]),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "wm": weight(8, 5)}
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 5, 2, 2]}, inits)
    assert_prunes_exactly(proto, 0.5)


def test_squeeze_unsqueeze_keep_channel_axis():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
        helper.make_node("Squeeze", ["p", "axes23"], ["s"], name="squeeze"),
        helper.make_node("Unsqueeze", ["s", "axes0"], ["u"], name="unsqueeze"),
        helper.make_node("Squeeze", ["u", "axes0"], ["v"], name="squeeze_again"),
        helper.make_node("Gemm", ["v", "wf"], ["y"], name="fc"),
    ]
    inits = {
        "w1": weight(8, 3, 1, 1), "b1": weight(8), "wf": weight(8, 3),
        "axes23": np.array([2, 3], dtype=np.int64), "axes0": np.array([0], dtype=np.int64),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 3]}, inits)
    assert_prunes_exactly(proto, 0.5)


def test_dynamic_batch_reshape_from_shape_prunes():
    """x.view(x.size(0), -1) with a symbolic batch: the batch entry stays computed."""
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Shape", ["a"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="batch", axis=0),
        helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"], name="unsq"),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["a", "target"], ["f"], name="view"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc"),
    ]
    inits = {
        "w1": weight(6, 3, 1, 1), "b1": weight(6), "wf": weight(6 * 4, 2),
        "zero": np.array(0, dtype=np.int64), "zero_axes": np.array([0], dtype=np.int64),
        "minus_one": np.array([-1], dtype=np.int64),
    }  # fmt: skip
    proto = model(nodes, {"x": ["batch", 3, 2, 2]}, {"y": ["batch", 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    assert any(n.op_type == "Shape" for n in result.to_proto().graph.node)


def test_reshape_targets_from_reduceprod_and_max_of_shapes():
    """tf2onnx's einsum lowering, with a symbolic batch: merge (channels, height) with
    ReduceProd over a shape slice, split them again with Max of two shapes' entries; the
    channels prune through both. (This ReduceProd reads static sizes and folds to a constant;
    test_frameworks_keras's attention block has one over symbolic sizes.)"""
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Shape", ["a"], ["sa"], name="shape_a"),
        helper.make_node("Shape", ["r"], ["sr"], name="shape_r"),
        helper.make_node("Slice", ["sa", "zero", "one"], ["batch"], name="batch"),
        helper.make_node("Slice", ["sa", "one", "three"], ["mid"], name="mid"),
        helper.make_node("Slice", ["sa", "three", "four"], ["tail"], name="tail"),
        helper.make_node("ReduceProd", ["mid"], ["merged"], name="prod", keepdims=1),
        helper.make_node("Concat", ["batch", "merged", "tail"], ["t1"], name="t1", axis=0),
        helper.make_node("Reshape", ["r", "t1"], ["f"], name="merge"),
        helper.make_node("Slice", ["sa", "zero", "three"], ["lead_a"], name="lead_a"),
        helper.make_node("Slice", ["sr", "zero", "three"], ["lead_r"], name="lead_r"),
        helper.make_node("Max", ["lead_a", "lead_r"], ["lead"], name="max"),
        helper.make_node("Concat", ["lead", "tail"], ["t2"], name="t2", axis=0),
        helper.make_node("Reshape", ["f", "t2"], ["back"], name="split"),
        conv("c2", "back", "w2", "b2", "y"),
    ]
    inits = {
        "w1": weight(6, 3, 1, 1), "b1": weight(6), "w2": weight(4, 6, 1, 1), "b2": weight(4),
        "zero": np.array([0], dtype=np.int64), "one": np.array([1], dtype=np.int64),
        "three": np.array([3], dtype=np.int64), "four": np.array([4], dtype=np.int64),
    }  # fmt: skip
    proto = model(nodes, {"x": ["batch", 3, 2, 2]}, {"y": ["batch", 4, 2, 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    w2 = next(i for i in result.to_proto().graph.initializer if i.name == "w2")
    assert list(w2.dims) == [4, 3, 1, 1]

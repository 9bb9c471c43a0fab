"""Concat, Split and Slice on the channel axis: offsets map positions."""

from __future__ import annotations

import numpy as np
from onnx import helper

from graphs import assert_prunes_exactly, conv, model, weight


def test_concat_of_two_branches_is_one_group_with_offset_positions():
    nodes = [
        conv("ca", "x", "wa", "ba", "a"),
        conv("cb", "x", "wb", "bb", "b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        conv("cy", "cat", "wy", None, "y"),
    ]
    inits = {
        "wa": weight(4, 3, 1, 1), "ba": weight(4), "wb": weight(6, 3, 1, 1), "bb": weight(6),
        "wy": weight(2, 10, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    wy = next(i for i in result.to_proto().graph.initializer if i.name == "wy")
    assert list(wy.dims) == [2, 5, 1, 1]
    (group,) = [g for g in result.groups if g.prunable]
    assert group.n_atoms == 10
    # Channel k of branch b is channel 4 + k of the concatenation.
    cat = group.atom_of[next(d for d in group.atom_of if d.tensor == "cat")]
    b = group.atom_of[next(d for d in group.atom_of if d.tensor == "b")]
    assert (cat[4:] == b).all()


def test_split_sizes_are_rewritten():
    nodes = [
        conv("c", "x", "w", "b", "a"),
        helper.make_node("Split", ["a", "sizes"], ["p", "q"], name="split", axis=1),
        conv("cp", "p", "wp", None, "yp"),
        conv("cq", "q", "wq", None, "yq"),
    ]
    inits = {
        "w": weight(10, 3, 1, 1), "b": weight(10), "sizes": np.array([4, 6], dtype=np.int64),
        "wp": weight(2, 4, 1, 1), "wq": weight(2, 6, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"yp": [1, 2, 2, 2], "yq": [1, 2, 2, 2]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    (group,) = [g for g in result.groups if g.prunable]
    assert group.n_atoms == 10


def test_split_without_sizes_gets_explicit_sizes():
    nodes = [
        conv("c", "x", "w", "b", "a"),
        helper.make_node("Split", ["a"], ["p", "q"], name="split", axis=1, num_outputs=2),
        conv("cp", "p", "wp", None, "yp"),
        conv("cq", "q", "wq", None, "yq"),
    ]
    inits = {
        "w": weight(8, 3, 1, 1), "b": weight(8), "wp": weight(2, 4, 1, 1),
        "wq": weight(2, 4, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"yp": [1, 2, 2, 2], "yq": [1, 2, 2, 2]}, inits,
                  opset=18)
    assert_prunes_exactly(proto, 0.5)


def test_slice_on_channels_keeps_reading_the_right_positions():
    nodes = [
        conv("c", "x", "w", "b", "a"),
        helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["s"], name="slice"),
        conv("cy", "s", "wy", None, "y"),
    ]
    inits = {
        "w": weight(10, 3, 1, 1), "b": weight(10), "starts": np.array([3], dtype=np.int64),
        "ends": np.array([9], dtype=np.int64), "axes": np.array([1], dtype=np.int64),
        "wy": weight(2, 6, 1, 1),
    }  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)
    for seed in range(3):
        assert_prunes_exactly(proto, 0.5, criterion="random", seed=seed)

"""Conv and ConvTranspose rules: plain, grouped, depthwise; each checked by the oracle."""

from __future__ import annotations

import numpy as np
from onnx import helper

from graphs import assert_prunes_exactly, conv, model, weight


def chain(groups: int, mid: int = 16, per_group_in: int | None = None):
    cin_g = mid // groups if per_group_in is None else per_group_in
    nodes = [
        conv("c1", "x", "w1", "b1", "a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", "b2", "g", group=groups, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["g"], ["s"], name="relu2"),
        conv("c3", "s", "w3", None, "y"),
    ]
    inits = {
        "w1": weight(mid, 3, 3, 3), "b1": weight(mid),
        "w2": weight(mid, cin_g, 3, 3), "b2": weight(mid),
        "w3": weight(4, mid, 1, 1),
    }  # fmt: skip
    return model(nodes, {"x": [1, 3, 6, 6]}, {"y": [1, 4, 6, 6]}, inits)


def test_plain_conv_chain_prunes_both_hidden_widths():
    result = assert_prunes_exactly(chain(groups=1), 0.5, min_groups=2)
    widths = sorted(g.width for g in result.groups if g.prunable)
    assert widths == [16, 16]
    w1 = next(i for i in result.to_proto().graph.initializer if i.name == "w1")
    assert list(w1.dims) == [8, 3, 3, 3]


def test_depthwise_conv_passes_channels_through_and_rewrites_group():
    result = assert_prunes_exactly(chain(groups=16), 0.5)
    dw = next(n for n in result.to_proto().graph.node if n.name == "c2")
    group = next(a.i for a in dw.attribute if a.name == "group")
    assert group == 8
    # c1's output and the depthwise output are one group: channels pass through.
    assert sum(g.prunable for g in result.groups) == 1


def test_grouped_conv_removes_whole_groups():
    result = assert_prunes_exactly(chain(groups=4), 0.5)
    node = next(n for n in result.to_proto().graph.node if n.name == "c2")
    group = next(a.i for a in node.attribute if a.name == "group")
    assert group == 2
    (pruned,) = [g for g in result.groups if g.prunable]
    assert pruned.n_atoms == 4 and pruned.atom_size == 4


def test_conv_transpose_output_channels_prune():
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["a"], name="up", strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c", "r", "w2", None, "y"),
    ]
    inits = {"w1": weight(3, 8, 2, 2), "b1": weight(8), "w2": weight(2, 8, 1, 1)}
    proto = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 8, 8]}, inits)
    result = assert_prunes_exactly(proto, 0.5)
    w1 = next(i for i in result.to_proto().graph.initializer if i.name == "w1")
    assert list(w1.dims) == [3, 4, 2, 2]


def test_ratio_zero_changes_nothing():
    proto = chain(groups=1)
    result = assert_prunes_exactly(proto, 0.0, min_groups=0)
    assert not result.plan.removed
    assert result.cost_after.params == result.cost_before.params


def test_kept_widths_follow_ratio():
    result = assert_prunes_exactly(chain(groups=1, mid=20), 0.3, min_groups=2)
    kept = sorted(v.size for v in result.plan.kept.values())
    assert set(kept) == {14}
    assert np.all([a.size == 6 for a in result.plan.removed.values()])


def test_depthwise_conv_behind_a_pad_computed_at_run_time_prunes():
    """TF 'SAME' padding (timm's tf_ EfficientNets): the spatial pads are computed from the
    input's shape and concatenated with literal zeros for batch and channels, so ONNX leaves
    the Pad output's channel count unknown; the zero entries say it is the input's, and the
    depthwise Conv behind it prunes with its group rewritten."""
    from onnx import TensorProto

    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["shape"], name="shape"),
        helper.make_node("Slice", ["shape", "s2", "s4"], ["hw"], name="hw"),
        helper.make_node("Mod", ["hw", "two"], ["odd"], name="odd"),
        helper.make_node("Concat", ["zeros4", "odd", "zeros2", "odd"], ["pads"], name="pads",
                         axis=0),
        helper.make_node("Pad", ["r", "pads"], ["p"], name="pad"),
        conv("dw", "p", "wd", "bd", "d", group=8),
        helper.make_node("Relu", ["d"], ["s"], name="relu2"),
        conv("c2", "s", "w2", "b2", "y"),
    ]  # fmt: skip
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "wd": weight(8, 1, 3, 3),
             "bd": weight(8), "w2": weight(4, 8, 1, 1), "b2": weight(4),
             "s2": np.array([2], np.int64), "s4": np.array([4], np.int64),
             "two": np.array([2], np.int64), "zeros4": np.zeros(2, np.int64),
             "zeros2": np.zeros(2, np.int64)}  # fmt: skip
    proto = model(nodes, {"x": [1, 3, "h", "w"]}, {"y": [1, 4, None, None]}, inits)
    for value in list(proto.graph.value_info):
        if value.name == "p":
            proto.graph.value_info.remove(value)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    result = assert_prunes_exactly(proto, 0.5)
    dw = next(n for n in result.model.graph if n.name == "dw")
    assert dw.attributes["group"].value == 4

"""One-sided allocation: the largest-MACs set of groups no two of which one node reads and
writes; no contraction loses channels on both sides, targets are met (over every group when
the set falls short), plans replay, the oracle passes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import onnxprune
from graphs import assert_exact, feeds, model, weight
from onnxprune.allocation_one_sided import one_sided_groups
from onnxprune.metrics import node_macs


def chain(width: int = 40):
    """fc1 (6 -> w), fc2 (w -> w), fc3 (w -> w), fc4 (w -> 3): groups a (fc1|fc2), b (fc2|fc3),
    c (fc3|fc4); fc2 joins a and b, fc3 joins b and c. MACs touched: a 2·6w + 2w², b 4w²,
    c 2w² + 2·3w: {a, c} outweighs {b}."""
    nodes = []
    inits = {}
    sizes = [6, width, width, width, 3]
    for i in range(4):
        x = "x" if i == 0 else f"r{i}"
        y = "y" if i == 3 else f"h{i + 1}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i + 1}", f"b{i + 1}"], [y], name=f"fc{i + 1}"))
        if i < 3:
            nodes.append(helper.make_node("Relu", [y], [f"r{i + 1}"], name=f"relu{i + 1}"))
        inits[f"w{i + 1}"] = weight(sizes[i], sizes[i + 1], seed=i)
        inits[f"b{i + 1}"] = weight(sizes[i + 1], seed=10 + i)
    return model(nodes, {"x": [2, 6]}, {"y": [2, 3]}, inits)


def _by_output(groups) -> dict[str, int]:
    """Group id by the Gemm output it is produced at."""
    return {d.tensor: g.id for g in groups for d in g.produced}


def test_the_set_is_the_independent_set_with_the_most_macs():
    analysis = onnxprune.analyze(chain())
    macs = {k: v or 0 for k, v in node_macs(analysis.analysis.model).items()}
    ids = _by_output(analysis.prunable)
    assert one_sided_groups(analysis.analysis.model, analysis.prunable, macs) == {ids["h1"],
                                                                                ids["h3"]}


def test_no_contraction_loses_channels_on_both_sides():
    proto = chain()
    result = onnxprune.prune(proto, ratio=0.5, allocation="one-sided", round_to=1,
                             inputs=feeds(proto))  # fmt: skip
    assert_exact(result)
    before = {t.name: list(t.dims) for t in proto.graph.initializer if t.name.startswith("w")}
    after = {name: list(v.const_value.shape) for name, v in
             result.model.graph.initializers.items() if name.startswith("w")}  # fmt: skip
    shrunk = {name: [a for a in range(2) if after[name][a] < before[name][a]] for name in before}
    assert shrunk == {"w1": [1], "w2": [0], "w3": [1], "w4": [0]}  # b (fc2 out) kept whole
    assert after["w2"] == [20, 40]


def test_a_macs_target_is_met_and_its_plan_replays():
    proto = chain()
    result = onnxprune.prune(proto, target_macs=0.5, allocation="one-sided", round_to=1,
                             inputs=feeds(proto))  # fmt: skip
    assert_exact(result)
    assert 0.45 <= result.cost_after.macs / result.cost_before.macs <= 0.5
    assert len(result.plan.removed) == 2 and not result.options["warnings"]
    again = onnxprune.prune(proto, plan=result.plan.to_dict(), inputs=feeds(proto))
    assert {k: v.tolist() for k, v in again.plan.removed.items()} == {
        k: v.tolist() for k, v in result.plan.removed.items()}


def test_a_target_the_set_cannot_reach_is_searched_over_every_group():
    """{a, c} at the deepest ratio (95%: 2 of 40 channels) keep ~5% of the MACs; 2% needs b
    too."""
    proto = chain()
    result = onnxprune.prune(proto, target_macs=0.02, allocation="one-sided", round_to=1,
                             inputs=feeds(proto))  # fmt: skip
    assert_exact(result)
    assert result.cost_after.macs / result.cost_before.macs <= 0.02
    assert len(result.plan.removed) == 3
    assert any("one-sided set" in w for w in result.options["warnings"])


def test_a_depthwise_convolution_does_not_split_its_group():
    """conv1 (3 -> 8), a depthwise 3x3 over the 8 channels, conv2 (8 -> 4): the depthwise
    conv reads and writes the same group, which stays in the set."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
             helper.make_node("Conv", ["a", "wd"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["d", "w2"], ["y"], name="conv2")]  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 6, 6]}, {"y": [1, 4, 6, 6]},
                  {"w1": weight(8, 3, 1, 1), "wd": weight(8, 1, 3, 3),
                   "w2": weight(4, 8, 1, 1)})  # fmt: skip
    analysis = onnxprune.analyze(proto)
    macs = {k: v or 0 for k, v in node_macs(analysis.analysis.model).items()}
    (group,) = analysis.prunable
    assert one_sided_groups(analysis.analysis.model, analysis.prunable, macs) == {group.id}
    result = onnxprune.prune(proto, ratio=0.5, allocation="one-sided", round_to=1,
                             inputs=feeds(proto))  # fmt: skip
    assert_exact(result)
    assert np.array_equal(result.model.graph.initializers["wd"].const_value.shape, [4, 1, 3, 3])


def test_the_cli_takes_the_one_sided_allocation(tmp_path):
    from onnx import save

    from onnxprune.cli import main

    src, out = tmp_path / "chain.onnx", tmp_path / "small.onnx"
    save(chain(), src)
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.5",
                 "--allocation", "one-sided"]) == 0  # fmt: skip
    assert out.exists()


@pytest.mark.zoo
def test_a_depthwise_residual_cnn_meets_its_target_with_every_dense_conv_one_sided():
    """mobilenet_v2 at 50% of MACs: verified, and no convolution but the depthwise ones (a
    channel in, the same channel out) loses both input and output channels."""
    import zoo

    path = zoo.export("mobilenet_v2", "torchscript")
    result = onnxprune.prune(path, target_macs=0.5, allocation="one-sided")
    assert result.verification.passed
    assert 0.4 <= result.cost_after.macs / result.cost_before.macs <= 0.5
    pruned = {n.name: n for n in result.model.graph if n.op_type == "Conv"}
    both = []
    for node in result.original.graph:
        if node.op_type != "Conv" or node.attributes.get_int("group", 1) > 1:
            continue
        before = node.inputs[1].const_value.shape
        after = pruned[node.name].inputs[1].const_value.shape
        if after[0] < before[0] and after[1] < before[1]:
            both.append(node.name)
    assert not both and len(result.plan.removed) > 0

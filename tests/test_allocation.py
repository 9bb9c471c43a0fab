"""Allocation options: ratio meaning, round-to, min-channels, exclude, MACs target."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

import onnxprune
from graphs import feeds, model, weight
from onnxprune.errors import UsageError
from onnxprune.importance import DATA_CRITERIA


def mlp(width: int = 40):
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["g"], name="fc2"),
        helper.make_node("Relu", ["g"], ["s"], name="relu2"),
        helper.make_node("Gemm", ["s", "w3"], ["y"], name="fc3"),
    ]
    inits = {
        "w1": weight(6, width), "b1": weight(width), "w2": weight(width, width),
        "b2": weight(width), "w3": weight(width, 3),
    }  # fmt: skip
    return model(nodes, {"x": [2, 6]}, {"y": [2, 3]}, inits)


def kept_widths(result) -> list[int]:
    return sorted({int(k.size) for k in result.plan.kept.values() if k.size != 6})


def test_ratio_removes_that_fraction_of_each_group():
    result = onnxprune.prune(mlp(40), ratio=0.25, inputs=feeds(mlp()))
    assert kept_widths(result) == [30]


def test_round_to_rounds_kept_channels_up():
    result = onnxprune.prune(mlp(40), ratio=0.5, round_to=16, inputs=feeds(mlp()))
    assert kept_widths(result) == [32]


def concat_of_branches(branches: int = 4, width: int = 16):
    """``branches`` 1x1 convs of ``width`` channels joined by a Concat, read by one conv: one
    group whose classes (one per branch) all have the same width, as densenet's."""
    from graphs import conv

    nodes = [conv(f"b{i}", "x", f"w{i}", None, f"a{i}") for i in range(branches)]
    nodes += [helper.make_node("Concat", [f"a{i}" for i in range(branches)], ["cat"], axis=1,
                               name="cat"),
              conv("head", "cat", "wh", None, "y")]  # fmt: skip
    inits = {f"w{i}": weight(width, 3, 1, 1, seed=i) for i in range(branches)}
    inits["wh"] = weight(2, branches * width, 1, 1, seed=9)
    return model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)


def test_a_rounded_target_that_rounding_up_overshoots_is_met_class_by_class():
    """Rounding every 16-channel branch up to a multiple of 8 halves all four at once (0.5 of
    the MACs for a 0.8 target); the search is redone with the rounding spread over the
    classes, which halves two branches (0.75)."""
    proto = concat_of_branches()
    result = onnxprune.prune(proto, target_macs=0.8, round_to=8, inputs=feeds(proto))
    kept = result.cost_after.macs / result.cost_before.macs
    assert kept == pytest.approx(0.75)
    widths = [result.model.graph.initializers[f"w{i}"].const_value.shape[0] for i in range(4)]
    assert sorted(widths) == [8, 8, 16, 16]
    assert any("class by class" in w for w in result.options["warnings"])
    assert result.verification.passed


def test_min_channels_is_respected():
    result = onnxprune.prune(mlp(40), ratio=0.9, min_channels=10, inputs=feeds(mlp()))
    assert kept_widths(result) == [10]


def test_exclude_by_node_name_glob_keeps_that_group():
    result = onnxprune.prune(mlp(40), ratio=0.5, exclude=["fc1*"], inputs=feeds(mlp()))
    assert len(result.plan.removed) == 1


def test_exclude_matching_nothing_is_a_usage_error():
    with pytest.raises(UsageError, match="matches no node or tensor"):
        onnxprune.prune(mlp(40), ratio=0.5, exclude=["nothing_like_this"])


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_unit_interval_is_rejected(ratio):
    with pytest.raises(UsageError, match="ratio"):
        onnxprune.prune(mlp(), ratio=ratio)


def test_target_macs_keeps_about_that_fraction():
    result = onnxprune.prune(mlp(64), target_macs=0.5, inputs=feeds(mlp()))
    kept = result.cost_after.macs / result.cost_before.macs
    assert 0.4 <= kept <= 0.5


@pytest.mark.parametrize(
    "criterion", ["l1", "l2", "random", "bn_scale", "activation", "fluctuation", "wanda"])
def test_every_criterion_prunes_exactly(criterion):
    data = feeds(mlp(), n=3, seed=4)
    result = onnxprune.prune(mlp(), ratio=0.5, criterion=criterion, inputs=feeds(mlp()),
                             calibration=data if criterion in DATA_CRITERIA else None)
    assert result.verification.passed and len(result.plan.removed) == 2


def test_bn_scale_ranks_channels_by_batchnorm_gamma():
    gamma = np.array([5, 0.1, 4, 0.2, 3, 0.3, 2, 0.4], dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
        helper.make_node("BatchNormalization", ["a", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="c2"),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "g": gamma, "b": weight(8), "m": weight(8),
             "v": np.ones(8, np.float32), "w2": weight(2, 8, 1, 1)}  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    result = onnxprune.prune(proto, ratio=0.5, criterion="bn_scale", inputs=feeds(proto))
    (removed,) = result.plan.removed.values()
    assert removed.tolist() == [1, 3, 5, 7], "the four smallest |gamma| go"


def test_magnitude_removes_the_smallest_channels():
    proto = mlp(8)
    for tensor in proto.graph.initializer:
        if tensor.name in ("w1", "b1", "w2"):
            array = numpy_helper.to_array(tensor).copy()
            axis = 0 if tensor.name == "w2" else array.ndim - 1
            np.moveaxis(array, axis, 0)[[1, 5]] *= 1e-3
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    result = onnxprune.prune(proto, ratio=0.25, criterion="l1", inputs=feeds(proto))
    group = next(g for g in result.groups if "w1" in {d.tensor for d in g.members})
    assert result.plan.removed[group.id].tolist() == [1, 5]
    assert np.isfinite(result.scores[group.id]).all()


def test_ratio_applies_to_each_branch_of_a_concat_even_when_one_scores_far_lower():
    """Branch a (tiny weights) and branch b feed one Concat: removing the lowest half of the
    group would empty branch a; the ratio applies per branch instead."""
    nodes = [
        helper.make_node("Gemm", ["x", "wa"], ["a"], name="fc_a"),
        helper.make_node("Gemm", ["x", "wb"], ["b"], name="fc_b"),
        helper.make_node("Concat", ["a", "b"], ["c"], name="cat", axis=1),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2"),
    ]
    inits = {"wa": weight(6, 8) * 1e-3, "wb": weight(6, 8), "w2": weight(16, 3)}
    proto = model(nodes, {"x": [2, 6]}, {"y": [2, 3]}, inits)
    result = onnxprune.prune(proto, ratio=0.5, inputs=feeds(proto))
    assert result.verification.passed
    shapes = {t.name: list(t.dims) for t in result.to_proto().graph.initializer}
    assert shapes["wa"] == [6, 4] and shapes["wb"] == [6, 4] and shapes["w2"] == [8, 3]


def test_params_and_latency_targets_and_plan_reuse():
    proto = mlp(64)
    data = feeds(proto)
    by_params = onnxprune.prune(proto, target_params=0.5, inputs=data)
    kept = by_params.cost_after.params / by_params.cost_before.params
    assert 0.35 < kept <= 0.5 and by_params.verification.passed
    by_latency = onnxprune.prune(proto, target_latency=0.9, inputs=data)
    assert by_latency.verification.passed and 0 < by_latency.ratio < 1
    replay = onnxprune.prune(proto, plan=by_params.plan.to_dict(), inputs=data)
    assert {k: v.tolist() for k, v in replay.plan.removed.items()} == {
        k: v.tolist() for k, v in by_params.plan.removed.items()}
    with pytest.raises(UsageError, match="exactly one"):
        onnxprune.prune(proto, ratio=0.5, target_params=0.5)
    with pytest.raises(UsageError, match="does not have as a prunable group"):
        onnxprune.prune(proto, plan={"removed": {"99": [0]}})
    with pytest.raises(UsageError, match="do not fit"):
        onnxprune.prune(proto, plan={"removed": {str(next(iter(by_params.plan.removed))): [500]}})

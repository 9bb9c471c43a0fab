"""Residual blocks found from the graph (onnxprune.blocks), dropped by
passes.remove_blocks, and checked by the oracle (each dropped branch zeroed at its sum)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import onnxprune
import tool_scripts
from graphs import feeds, model, run, weight
from onnxprune.blocks import find_blocks
from onnxprune.passes.cleanup import CleanupPass
from onnxprune.passes.remove_blocks import RemoveBlocksPass
from onnxprune.plan import RemovalPlan
from onnxprune.rewrite import rewrite
from onnxprune.verify import verify_plan

H = 8


def _mlp(prefix: str, x: str, out: str, scale: float = 1.0) -> tuple[list, dict]:
    """``out = x + W2 relu(W1 x)`` (a pre-activation residual MLP block)."""
    nodes = [helper.make_node("MatMul", [x, f"{prefix}.w1"], [f"{prefix}.h"], name=f"{prefix}.mm1"),
             helper.make_node("Relu", [f"{prefix}.h"], [f"{prefix}.r"], name=f"{prefix}.relu"),
             helper.make_node("MatMul", [f"{prefix}.r", f"{prefix}.w2"], [f"{prefix}.y"],
                              name=f"{prefix}.mm2"),
             helper.make_node("Add", [x, f"{prefix}.y"], [out], name=f"{prefix}.add")]  # fmt: skip
    return nodes, {f"{prefix}.w1": weight(H, 2 * H), f"{prefix}.w2": scale * weight(2 * H, H)}


def _stack(scales=(1.0, 1.0, 1.0)) -> onnx.ModelProto:
    """Three chained residual MLP blocks and a head."""
    nodes, inits, x = [], {}, "x"
    for i, scale in enumerate(scales):
        n, w = _mlp(f"b{i}", x, f"s{i}", scale)
        nodes += n
        inits |= w
        x = f"s{i}"
    nodes.append(helper.make_node("MatMul", [x, "head"], ["out"], name="head_mm"))
    inits["head"] = weight(H, 4)
    return model(nodes, {"x": ["batch", H]}, {"out": ["batch", 4]}, inits)


def test_chained_blocks_are_found_with_their_inputs_and_branches() -> None:
    found = onnxprune.analyze(_stack()).blocks
    assert [(b.add, b.input, b.skip_index) for b in found.blocks] == [
        ("b0.add", "x", 0), ("b1.add", "s0", 0), ("b2.add", "s1", 0)]
    assert set(found.blocks[1].nodes) == {"b1.mm1", "b1.relu", "b1.mm2"}
    assert found.blocks[0].weights == ("b0.w1", "b0.w2")
    assert found.blocks[0].params == 2 * H * 2 * H
    assert len(found.layers) == 3 and not found.not_removable


def test_projection_shortcut_keeps_the_skip_and_drops_the_longer_branch() -> None:
    nodes = [helper.make_node("MatMul", ["x", "p"], ["skip"], name="proj"),
             helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
             helper.make_node("Add", ["y", "skip"], ["out"], name="add")]  # fmt: skip
    proto = model(nodes, {"x": [2, 4]}, {"out": [2, H]},
                  {"p": weight(4, H), "w1": weight(4, H), "w2": weight(H, H)})
    (block,) = onnxprune.analyze(proto).blocks.blocks
    assert (block.skip_index, block.input, set(block.nodes)) == (1, "x", {"mm1", "relu", "mm2"})


def test_sums_that_cannot_drop_a_branch_say_why() -> None:
    nodes = [
        # the branch result is also a model output
        helper.make_node("MatMul", ["x", "w1"], ["y1"], name="mm1"),
        helper.make_node("Add", ["x", "y1"], ["s1"], name="shared_add"),
        # two parallel weighted paths of one length
        helper.make_node("MatMul", ["s1", "wa"], ["ya"], name="mma"),
        helper.make_node("MatMul", ["s1", "wb"], ["yb"], name="mmb"),
        helper.make_node("Add", ["ya", "yb"], ["s2"], name="parallel_add"),
        # the branch broadcasts the skip: [2, 1] + [2, 8]
        helper.make_node("ReduceMean", ["s2"], ["m"], name="mean", axes=[1], keepdims=1),
        helper.make_node("MatMul", ["s2", "w3"], ["y3"], name="mm3"),
        helper.make_node("Add", ["m", "y3"], ["out"], name="broadcast_add"),
    ]
    proto = model(nodes, {"x": [2, H]}, {"out": [2, H], "y1": [2, H]},
                  {"w1": weight(H, H), "wa": weight(H, H), "wb": weight(H, H),
                   "w3": weight(H, H)})  # fmt: skip
    found = onnxprune.analyze(proto).blocks
    assert not found.blocks
    reasons = {r.add: r.reason for r in found.not_removable}
    assert "parallel" in reasons["parallel_add"]
    assert "broadcasts" in reasons["broadcast_add"]
    assert "shared_add" not in reasons  # its branch is no private subgraph: not a block at all


def test_remove_pass_keeps_a_graph_output_name() -> None:
    nodes, inits = _mlp("b", "x", "out")
    proto = model(nodes, {"x": [2, H]}, {"out": [2, H]}, inits)
    pruned = ir.from_proto(proto)
    RemoveBlocksPass([("b.add", 0)])(pruned)
    CleanupPass()(pruned)
    out = ir.to_proto(pruned)
    assert [o.name for o in out.graph.output] == ["out"]
    assert [n.op_type for n in out.graph.node] == ["Identity"] and not out.graph.initializer
    feed = feeds(proto)[0]
    np.testing.assert_array_equal(run(out, feed)[0], feed["x"])


def test_oracle_fails_a_model_that_dropped_another_block() -> None:
    proto = _stack()
    original = onnxprune.analyze(proto).analysis.model
    found = find_blocks(original)
    plan = RemovalPlan.build([], {}, [found.blocks[1]])
    wrong = RemovalPlan.build([], {}, [found.blocks[2]])

    right = verify_plan(original, rewrite(original, plan), plan, feeds(proto))
    assert right.passed, right.note
    verdict = verify_plan(original, rewrite(original, wrong), plan, feeds(proto))
    assert not verdict.passed


def test_remove_blocks_drops_the_weakest_branch_and_replays() -> None:
    proto = _stack(scales=(1.0, 1e-3, 1.0))
    for criterion in ("output", "influence"):
        result = onnxprune.prune(proto, remove_blocks=1, calibration_random=4,
                                 block_criterion=criterion)  # fmt: skip
        assert sorted(result.plan.blocks) == [1], criterion
        assert result.verification.passed
    result = onnxprune.prune(proto, remove_blocks=1)  # no data: the weight proxy
    assert sorted(result.plan.blocks) == [1]
    assert any("weight-norm proxy" in w for w in result.options["warnings"])
    replay = onnxprune.prune(proto, plan=result.plan.to_dict())
    assert replay.plan.blocks == result.plan.blocks
    assert result.cost_after.params == replay.cost_after.params < result.cost_before.params


def test_iterative_choice_rescores_after_each_drop() -> None:
    proto = _stack(scales=(1e-3, 1e-2, 1.0))
    result = onnxprune.prune(proto, remove_blocks=2, calibration_random=4,
                             iterative_blocks=True)  # fmt: skip
    assert sorted(result.plan.blocks) == [0, 1]
    assert result.verification.passed
    with pytest.raises(onnxprune.UsageError, match="output"):
        onnxprune.prune(proto, remove_blocks=1, calibration_random=2, iterative_blocks=True,
                        block_criterion="influence")  # fmt: skip


def test_depth_options_that_cannot_go_together_are_refused() -> None:
    proto = _stack()
    for kwargs, match in (({"remove_blocks": -1}, "whole number"),
                          ({"remove_blocks": 1, "depth": "both", "target_macs": 0.5}, "fixes"),
                          ({"depth": "both", "ratio": 0.2}, "target"),
                          ({"depth": "sideways", "ratio": 0.2}, "depth must be"),
                          ({"ratio": 0.2, "depth": "depth", "block_criterion": "x"}, "criterion"),
                          ({"remove_blocks": 1, "block_criterion": "output"}, "calibration"),
                          ({"remove_blocks": 1, "compensate": True, "calibration_random": 2},
                           "nothing for them")):
        with pytest.raises(onnxprune.UsageError, match=match):
            onnxprune.prune(proto, **kwargs)


def test_depth_only_target_drops_the_fewest_blocks_that_reach_it() -> None:
    proto = _stack()
    result = onnxprune.prune(proto, depth="depth", target_params=0.6)
    # each block holds 2*H*2H = 256 of 800 parameters: two go
    assert len(result.plan.blocks) == 2 and not result.plan.removed
    assert result.cost_after.params / result.cost_before.params <= 0.6
    half = onnxprune.prune(proto, depth="depth", ratio=0.34)
    assert len(half.plan.blocks) == 1


def test_combined_search_is_no_worse_than_width_or_depth_alone() -> None:
    proto = _stack(scales=(1.0, 0.05, 1.0))
    result = onnxprune.prune(proto, depth="both", target_params=0.7, calibration_random=8)
    rows = result.options["depth_search"]
    assert rows[0]["blocks"] == 0 and rows[-1]["blocks"] >= 1
    best = min(r["output_change"] for r in rows)
    chosen = next(r for r in rows if r["blocks"] == len(result.plan.blocks))
    assert chosen["output_change"] == best
    assert result.verification.passed
    assert result.cost_after.params / result.cost_before.params <= 0.7 + 1e-9
    from onnxprune.report import _markdown, build_report

    assert "Depth + width candidates" in _markdown(build_report(result))
    replay = onnxprune.prune(proto, plan=result.plan.to_dict(), refit=False)
    assert replay.plan.blocks == result.plan.blocks
    assert replay.plan.removed.keys() == result.plan.removed.keys()


def test_a_12_layer_decoder_has_24_removable_sublayers_in_12_layers(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    tool_scripts.load("make_llm").build_shaped(path, hidden=32, layers=12, heads=4,
                                               kv_heads=4, intermediate=64, vocab=64)
    analysis = onnxprune.analyze(path)
    found = analysis.blocks
    assert len(found.blocks) == 24 and len(found.layers) == 12
    assert all(len(blocks) == 2 for blocks in found.layers.values())
    result = onnxprune.prune(path, remove_blocks=6, dims={"batch": 1, "sequence": 16})
    assert len(result.plan.blocks) == 6 and result.verification.passed


def test_a_wrong_block_plan_is_refused_with_the_sum_named() -> None:
    proto = _stack()
    data = {"removed": {}, "blocks": {"1": {"add": "b2.add", "skip_input": 0}}}
    with pytest.raises(onnxprune.UsageError, match="b2.add"):
        onnxprune.prune(proto, plan=data)

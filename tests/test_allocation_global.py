"""Global allocation: one threshold over normalised scores; groups lose different shares,
none is emptied, targets are met, plans replay, and the oracle passes."""

from __future__ import annotations

import json

import numpy as np
import onnx
from test_allocation import mlp

import onnxprune
from graphs import assert_exact, feeds
from onnxprune.allocation_global import MAX_SHARE, allocate_global
from onnxprune.cli import main


def lopsided() -> onnx.ModelProto:
    """mlp(40) whose first hidden layer has 30 near-dead channels (tiny weights producing
    and reading them): global allocation should take them there rather than evenly."""
    proto = mlp(40)
    for tensor in proto.graph.initializer:
        array = onnx.numpy_helper.to_array(tensor).copy()
        if tensor.name in ("w1", "b1"):
            array[..., 10:] *= 1e-3
        elif tensor.name == "w2":
            array[10:] *= 1e-3
        tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    return proto


def test_global_takes_the_weak_channels_wherever_they_are():
    result = onnxprune.prune(lopsided(), ratio=0.375, allocation="global", inputs=feeds(mlp()))
    assert_exact(result)
    removed = sorted(len(v) for v in result.plan.removed.values())
    assert sum(removed) == int(80 * 0.375) and removed[-1] >= 25  # mostly from one group
    uniform = onnxprune.prune(lopsided(), ratio=0.375, inputs=feeds(mlp()))
    assert sorted(len(v) for v in uniform.plan.removed.values()) == [15, 15]


def test_no_group_loses_more_than_its_cap():
    groups = onnxprune.analyze(mlp(40)).prunable
    scores = {g.id: np.r_[np.zeros(35), np.ones(5)] if k == 0 else np.ones(40)
              for k, g in enumerate(groups)}  # fmt: skip
    removed = allocate_global(groups, scores, 0.5)
    assert len(removed[groups[0].id]) == int(40 * MAX_SHARE)
    assert sum(map(len, removed.values())) == 40


def test_global_meets_a_macs_target_and_its_plan_replays(tmp_path):
    proto = mlp(64)
    result = onnxprune.prune(proto, target_macs=0.5, allocation="global", inputs=feeds(proto))
    assert_exact(result)
    kept = result.cost_after.macs / result.cost_before.macs
    assert 0.45 <= kept <= 0.5
    path, out, plan = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "plan.json"
    onnx.save(proto, path)
    assert main(["prune", str(path), "-o", str(out), "--target-macs", "0.5", "--allocation",
                 "global", "--plan-out", str(plan)]) == 0  # fmt: skip
    again = onnxprune.prune(proto, plan=plan, inputs=feeds(proto))
    stored = json.loads(plan.read_text())["removed"]
    assert {str(k): v.tolist() for k, v in again.plan.removed.items()} == stored
    assert again.cost_after.macs == result.cost_after.macs


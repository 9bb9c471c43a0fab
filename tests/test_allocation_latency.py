"""Latency allocation: channels go by score per millisecond of an onnxruntime profile; the
costly group loses first, floors hold, targets are met, plans replay, the oracle passes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_allocation import mlp

import onnxprune
from graphs import assert_exact, feeds
from onnxprune.allocation_global import MAX_SHARE
from onnxprune.allocation_latency import allocate_latency, channel_costs, kernel_block, node_times
from onnxprune.cli import main


def test_the_costly_group_loses_first_until_the_time_budget_is_spent():
    groups = onnxprune.analyze(mlp(40)).prunable
    scores = {g.id: np.ones(40) for g in groups}
    costs = {groups[0].id: 1.0, groups[1].id: 0.01}
    removed = allocate_latency(groups, scores, 0.5, costs=costs)
    # total 40 x 1.0 + 40 x 0.01 = 40.4 ms; half is 20.2: 21 channels of the costly group
    assert {k: len(v) for k, v in removed.items()} == {groups[0].id: 21}
    capped = allocate_latency(groups, scores, 0.95, costs=costs)
    assert len(capped[groups[0].id]) == int(40 * MAX_SHARE)  # its floor, then the cheap one
    assert len(capped[groups[1].id]) == int(40 * MAX_SHARE)
    important = {groups[0].id: np.full(40, 1000.0), groups[1].id: np.ones(40)}
    assert set(allocate_latency(groups, important, 0.005, costs=costs)) == {groups[1].id}


def test_profiled_costs_name_every_node_that_runs():
    proto = mlp(64)
    analysis = onnxprune.analyze(proto)
    times = node_times(analysis.analysis.model, feeds(proto)[0])
    assert {"fc1", "fc2", "fc3"} <= set(times) and all(t >= 0 for t in times.values())
    costs = channel_costs(analysis.analysis.model, analysis.prunable, times)
    assert set(costs) == {g.id for g in analysis.prunable} and all(c > 0 for c in costs.values())


def test_latency_allocation_meets_a_macs_target_and_its_plan_replays():
    proto = mlp(64)
    # round_to=1: with the kernel block (16 on AVX-512) and a profile that happens to make one
    # group far costlier, the only widths under half the MACs keep 28% of them
    result = onnxprune.prune(proto, target_macs=0.5, allocation="latency", round_to=1,
                             inputs=feeds(proto))  # fmt: skip
    assert_exact(result)
    kept = result.cost_after.macs / result.cost_before.macs
    assert 0.45 <= kept <= 0.5
    assert all(len(v) < 64 for v in result.plan.removed.values())
    again = onnxprune.prune(proto, plan=result.plan.to_dict(), inputs=feeds(proto))
    assert {k: v.tolist() for k, v in again.plan.removed.items()} == {
        k: v.tolist() for k, v in result.plan.removed.items()}


def test_latency_allocation_keeps_widths_in_multiples_of_the_kernel_block():
    proto = mlp(64)
    block = kernel_block()
    result = onnxprune.prune(proto, target_macs=0.5, allocation="latency", inputs=feeds(proto))
    assert result.options["round_to"] == block
    assert all((64 - len(v)) % block == 0 for v in result.plan.removed.values())
    # an explicit --round-to wins, and the other allocations do not round by default
    free = onnxprune.prune(proto, target_macs=0.5, allocation="latency", round_to=1,
                           inputs=feeds(proto))  # fmt: skip
    assert free.options["round_to"] == 1
    assert onnxprune.prune(proto, ratio=0.3, inputs=feeds(proto)).options["round_to"] == 1


def test_round_to_auto_aligns_any_allocation_to_the_kernel_block(tmp_path):
    proto = mlp(64)
    result = onnxprune.prune(proto, ratio=0.3, round_to="auto", inputs=feeds(proto))
    assert result.options["round_to"] == kernel_block()
    src, out = tmp_path / "mlp.onnx", tmp_path / "small.onnx"
    onnx.save(proto, src)
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.3", "--round-to", "auto"]) == 0
    with pytest.raises(SystemExit):  # argparse: neither a number nor auto
        main(["prune", str(src), "-o", str(out), "--ratio", "0.3", "--round-to", "fast"])

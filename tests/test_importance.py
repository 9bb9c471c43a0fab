"""Weight norms per channel: every block of a weight counted once, at float64 precision."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import onnxprune
from graphs import conv, model, weight
from onnxprune import importance, weights


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("power", [1, 2])
def test_per_channel_sums_equal_a_float64_reference_through_every_block(monkeypatch, dtype,
                                                                        axis, power):  # fmt: skip
    """Blocks made small (8 elements per run, 64 per block) so that a 6 x 20 x 12 weight is
    read in many blocks along every axis: each channel's sum is the float64 sum over the
    other axes (float32 runs within 1e-6)."""
    monkeypatch.setattr(importance, "_RUN", 8)
    monkeypatch.setattr(importance, "_BLOCK", 64)
    weight = np.random.default_rng(0).standard_normal((6, 20, 12)).astype(dtype)
    wide = np.abs(weight.astype(np.float64)) ** power
    reference = wide.sum(axis=tuple(a for a in range(3) if a != axis))
    got = importance._per_position(weight, axis, power)
    assert got.dtype == np.float64 and got.shape == (weight.shape[axis],)
    np.testing.assert_allclose(got, reference, rtol=1e-6)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_weight_norms_scored_two_groups_at_a_time_equal_the_serial_scores(monkeypatch, criterion):
    nodes = [conv("c1", "x", "w1", "b1", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"),
             conv("c2", "r", "w2", "b2", "b"), helper.make_node("Relu", ["b"], ["s"], name="relu2"),
             conv("c3", "s", "w3", None, "y")]  # fmt: skip
    inits = {"w1": weight(24, 3, 3, 3, seed=1), "b1": weight(24, seed=2),
             "w2": weight(40, 24, 3, 3, seed=3), "b2": weight(40, seed=4),
             "w3": weight(5, 40, 1, 1, seed=5)}  # fmt: skip
    analysis = onnxprune.analyze(model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 5, 4, 4]}, inits))
    groups = [g for g in analysis.groups if g.prunable]
    assert len(groups) == 2
    pools = []
    real = weights.ThreadPoolExecutor
    monkeypatch.setattr(weights, "ThreadPoolExecutor", lambda n: pools.append(n) or real(n))
    serial = importance.score_groups(analysis.analysis, groups, criterion)
    assert pools == []  # a model this small is scored serially
    monkeypatch.setattr(weights, "PARALLEL_OVER", 0)
    threaded = importance.score_groups(analysis.analysis, groups, criterion)
    assert pools == [weights.THREADS]
    assert serial.keys() == threaded.keys()
    for gid in serial:
        assert np.array_equal(serial[gid], threaded[gid])

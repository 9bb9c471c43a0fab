"""What prune says about itself: unreachable targets, groups too small to lose a unit,
groups a data criterion cannot measure, and runs that would change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

import onnxprune
from graphs import conv, model, weight
from onnxprune.cli import main

DIGITS = Path(__file__).resolve().parent.parent / "models" / "digits_cnn.onnx"


def two_widths() -> onnx.ModelProto:
    """conv(3 -> 2) -> relu -> conv(2 -> 16) -> relu -> conv(16 -> 2): groups of 2 and 16."""
    nodes = [conv("c1", "x", "w1", "b1", "a"), helper.make_node("Relu", ["a"], ["r"], name="r1"),
             conv("c2", "r", "w2", "b2", "b"), helper.make_node("Relu", ["b"], ["s"], name="r2"),
             conv("c3", "s", "w3", "b3", "y")]  # fmt: skip
    inits = {"w1": weight(2, 3, 1, 1), "b1": weight(2), "w2": weight(16, 2, 1, 1),
             "b2": weight(16), "w3": weight(2, 16, 1, 1), "b3": weight(2)}  # fmt: skip
    return model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)


def test_an_unreachable_target_is_reported():
    result = onnxprune.prune(DIGITS, target_macs=0.001)
    assert any("out of reach" in w for w in result.options["warnings"])


def test_a_group_too_small_to_lose_a_channel_is_reported():
    result = onnxprune.prune(two_widths(), ratio=0.3)
    assert len(result.plan.removed) == 1
    assert any("lose no channel at ratio 0.3" in w for w in result.options["warnings"])


def test_nothing_to_remove_exits_2_and_writes_nothing(tmp_path, capsys):
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(two_widths(), path)
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.01"]) == 2
    assert "nothing would change" in capsys.readouterr().err and not out.exists()
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0"]) == 0  # asked for


def test_groups_without_statistics_fall_back_to_magnitude():
    """With statistics for its consumer a group is measured (no warning); with none (a
    consumer input that is not a float activation), ``unmeasured`` names it and a data
    criterion ranks it exactly as L2 magnitude does."""
    from onnxprune.importance import score_groups, unmeasured

    nodes = [conv("c1", "x", "w1", "b1", "a"), helper.make_node("Relu", ["a"], ["r"], name="r1"),
             conv("c2", "r", "w2", "b2", "y")]  # fmt: skip
    inits = {"w1": weight(8, 3, 1, 1, seed=1), "b1": weight(8, seed=2),
             "w2": weight(2, 8, 1, 1, seed=3), "b2": weight(2, seed=4)}  # fmt: skip
    proto = model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    result = onnxprune.prune(proto, ratio=0.5, calibration_random=4)
    assert not result.options["warnings"]
    analysis = result.analysis.analysis
    group = next(g for g in result.groups if g.prunable)
    assert unmeasured([group], {}) == [group.id]
    by_data = score_groups(analysis, [group], "fluctuation", {})
    by_magnitude = score_groups(analysis, [group], "l2")
    np.testing.assert_allclose(by_data[group.id], by_magnitude[group.id])

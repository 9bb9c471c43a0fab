"""Least-squares refit of kept weights from calibration Gram matrices (MatMul, and Conv of any
kernel and padding), and the sequential refit of everything downstream, verified exactly (the
masked original carries the same refit weights) and better than plain removal on the data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import onnxprune
from graphs import conv, feeds, model, run, weight
from onnxprune.cli import main
from onnxprune.errors import UsageError


def correlated_mlp():
    """Hidden units are strongly correlated (rank-4 input to 16 units): removed ones can be
    predicted from kept ones, which is what a refit exploits."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="b_up"),
        helper.make_node("MatMul", ["hb", "w2"], ["m"], name="down"),
        helper.make_node("Add", ["m", "b2"], ["y"], name="b_down"),
    ]
    inits = {"w1": weight(4, 16), "b1": weight(16), "w2": weight(16, 5), "b2": weight(5)}
    return model(nodes, {"x": [8, 4]}, {"y": [8, 5]}, inits)


def _error(proto, pruned, data) -> float:
    return sum(float(np.square(run(proto, f)[0] - run(pruned, f)[0]).mean()) for f in data)


def _plain_refit_and_centred(proto, calib, test):
    """Ratio 0.5 without refit, with it, and with it centred (compensation); the two refits
    verified, each with one refit weight."""
    plain = onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=False, inputs=test)
    refit = onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=True, inputs=test)
    both = onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=True, compensate=True,
                           inputs=test)  # fmt: skip
    for result in (refit, both):
        assert result.verification.passed and result.options["refit_weights"] == 1
    return plain, refit, both


def test_refit_is_verified_and_reconstructs_better_than_removal():
    proto = correlated_mlp()
    calib = feeds(proto, n=8, seed=11)
    test = feeds(proto, n=4, seed=12)
    plain, refit, both = _plain_refit_and_centred(proto, calib, test)
    e_plain, e_refit, e_both = (_error(proto, r.to_proto(), test) for r in (plain, refit, both))
    print(f"output MSE: removal {e_plain:.3g}, refit {e_refit:.3g}, centred refit {e_both:.3g}")
    assert e_refit < 0.1 * e_plain and e_both < 0.1 * e_plain


def test_cli_refit_model_verifies_from_its_stored_plan(tmp_path):
    proto = correlated_mlp()
    src, out = tmp_path / "mlp.onnx", tmp_path / "pruned.onnx"
    onnx.save(proto, src)
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in feeds(proto, n=4)]))
    plan = tmp_path / "plan.json"
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.5", "--calib",
                 str(tmp_path / "calib.npz"), "--refit", "--compensate",
                 "--plan-out", str(plan)]) == 0  # fmt: skip
    assert main(["verify", str(src), str(out)]) == 0
    # the refit is not stored in the plan: replaying it needs the data again
    again = tmp_path / "again.onnx"
    assert main(["prune", str(src), "-o", str(again), "--plan", str(plan)]) == 2
    assert main(["prune", str(src), "-o", str(again), "--plan", str(plan), "--calib",
                 str(tmp_path / "calib.npz")]) == 0  # fmt: skip
    f = feeds(proto, seed=5)[0]
    np.testing.assert_allclose(run(onnx.load(out), f)[0], run(onnx.load(again), f)[0],
                               rtol=1e-5, atol=1e-5)


def correlated_convs():
    """A 1x1 conv spreads 2 input channels over 12 (rank 2: any 6 predict the others), then a
    padded 3x3 conv reads them: its refit folds the removed channels into the kept ones
    kernel position by kernel position."""
    nodes = [conv("spread", "x", "w1", "b1", "h"),
             conv("mix", "h", "w2", "b2", "y", pads=[1, 1, 1, 1])]  # fmt: skip
    inits = {"w1": weight(12, 2, 1, 1), "b1": weight(12), "w2": weight(4, 12, 3, 3),
             "b2": weight(4)}  # fmt: skip
    return model(nodes, {"x": [2, 2, 6, 6]}, {"y": [2, 4, 6, 6]}, inits)


def test_padded_3x3_conv_refit_is_verified_and_reconstructs_better_than_removal():
    proto = correlated_convs()
    calib, test = feeds(proto, n=6, seed=21), feeds(proto, n=3, seed=22)
    plain, refit, both = _plain_refit_and_centred(proto, calib, test)
    # compensation cannot fold a mean into a padded conv (its borders see zeros): the refit
    # there stays uncentred and no fill is made, and the result is still exact
    assert not both.plan.fills
    e_plain, e_refit = (_error(proto, r.to_proto(), test) for r in (plain, refit))
    print(f"output MSE: removal {e_plain:.3g}, refit {e_refit:.3g}")
    assert e_refit < 1e-2 * e_plain


def deep_mlp():
    """Three ReLU layers: the first loses units, and every later layer sees inputs that the
    one-shot refit (fit on the original's statistics) does not correct."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="l1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="a1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="l2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="a2"),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="l3")]  # fmt: skip
    inits = {"w1": weight(6, 24, seed=31), "w2": weight(24, 16, seed=32),
             "w3": weight(16, 3, seed=33)}  # fmt: skip
    return model(nodes, {"x": ["n", 6]}, {"y": ["n", 3]}, inits)


def test_sequential_refit_is_verified_and_beats_the_one_shot_refit():
    proto = deep_mlp()
    calib = [{"x": np.random.default_rng(41).standard_normal((256, 6)).astype(np.float32)}]
    test = [{"x": np.random.default_rng(42).standard_normal((64, 6)).astype(np.float32)}]
    # the hidden layers are the prunable groups; only the first loses units (h2 is excluded)
    options = {"ratio": 0.5, "calibration": calib, "inputs": test, "exclude": ["h2"]}
    one_shot = onnxprune.prune(proto, **options)
    sequential = onnxprune.prune(proto, sequential_refit=True, **options)
    assert sequential.verification.passed and sequential.options["sequential_refit"]
    # l2 (reads the pruned layer) and l3 (downstream) are refit
    assert set(sequential.plan.weight_updates) == {"w2", "w3"}
    e_one, e_seq = (_error(proto, r.to_proto(), test) for r in (one_shot, sequential))
    print(f"output MSE: one-shot refit {e_one:.3g}, sequential {e_seq:.3g}")
    assert e_seq < 0.95 * e_one  # measured 23.0 vs 25.2
    with pytest.raises(UsageError, match="needs calibration data"):
        onnxprune.prune(proto, ratio=0.5, sequential_refit=True)
    with pytest.raises(UsageError, match="refines the least-squares refit"):
        onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=False, sequential_refit=True)


def test_cli_sequential_refit_verifies_from_its_stored_plan_and_replays(tmp_path):
    proto = deep_mlp()
    src, out, again = tmp_path / "mlp.onnx", tmp_path / "pruned.onnx", tmp_path / "again.onnx"
    onnx.save(proto, src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(43).standard_normal((64, 6)).astype(np.float32))
    plan = tmp_path / "plan.json"
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.5", "--calib", str(calib),
                 "--exclude", "h2", "--sequential-refit", "--plan-out", str(plan)]) == 0
    assert main(["verify", str(src), str(out)]) == 0
    # the plan remembers the sequential refit: replaying it with the data gives the same model
    assert main(["prune", str(src), "-o", str(again), "--plan", str(plan), "--calib",
                 str(calib)]) == 0  # fmt: skip
    f = feeds(proto, seed=5)[0]
    np.testing.assert_array_equal(run(onnx.load(out), f)[0], run(onnx.load(again), f)[0])

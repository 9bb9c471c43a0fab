"""Least-squares refit of kept weights from calibration Gram matrices, verified exactly (the
masked original carries the same refit weights) and better than plain removal on the data."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

import onnxprune
from graphs import feeds, model, run, weight
from onnxprune.cli import main


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


def test_refit_is_verified_and_reconstructs_better_than_removal():
    proto = correlated_mlp()
    calib = feeds(proto, n=8, seed=11)
    test = feeds(proto, n=4, seed=12)
    plain = onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=False, inputs=test)
    refit = onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=True, inputs=test)
    both = onnxprune.prune(proto, ratio=0.5, calibration=calib, refit=True, compensate=True,
                           inputs=test)  # fmt: skip
    for result in (refit, both):
        assert result.verification.passed and result.options["refit_weights"] == 1
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

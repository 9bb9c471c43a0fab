"""Bias compensation (FLAP): the mean of removed channels folded into consumer biases, verified
exactly against the masked original whose removed channels carry that mean."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

import onnxprune
from graphs import conv, feeds, model, run, weight
from onnxprune.cli import main


def _calib(proto, n: int = 3):
    return feeds(proto, n=n, seed=7)


def _relu_mlp(bias_after_matmul: bool):
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),  # positive means: compensation matters
        helper.make_node("MatMul", ["r", "w2"], ["m"] if bias_after_matmul else ["y"],
                         name="down"),
    ]  # fmt: skip
    inits = {"w1": weight(6, 16), "w2": weight(16, 4)}
    if bias_after_matmul:
        nodes.append(helper.make_node("Add", ["m", "b2"], ["y"], name="bias"))
        inits["b2"] = weight(4)
    return model(nodes, {"x": [3, 6]}, {"y": [3, 4]}, inits)


def _prune_compensated(proto, **options):
    result = onnxprune.prune(proto, ratio=0.5, calibration=_calib(proto), compensate=True,
                             refit=False, inputs=feeds(proto, seed=3), **options)  # fmt: skip
    assert result.verification.passed, result.verification
    assert result.plan.fills and result.options["compensated_consumers"] >= 1
    return result


def test_matmul_into_graph_output_gets_a_new_bias_and_keeps_the_output_name():
    proto = _relu_mlp(bias_after_matmul=False)
    result = _prune_compensated(proto)
    pruned = result.to_proto()
    assert [o.name for o in pruned.graph.output] == ["y"]
    assert any(n.op_type == "Add" for n in pruned.graph.node)


def test_existing_bias_absorbs_the_mean_and_beats_plain_removal():
    proto = _relu_mlp(bias_after_matmul=True)
    result = _prune_compensated(proto)
    plain = onnxprune.prune(proto, ratio=0.5, calibration=_calib(proto), refit=False,
                            inputs=feeds(proto))
    assert [n.op_type for n in result.to_proto().graph.node].count("Add") == 1
    # Replacing removed channels by their mean errs less than zeroing them (on the data).
    data = _calib(proto)
    error = {}
    for name, r in (("mean", result), ("zero", plain)):
        error[name] = sum(float(np.square(run(proto, f)[0] - run(r.to_proto(), f)[0]).mean())
                          for f in data)  # fmt: skip
    assert error["mean"] < error["zero"]


def test_gemm_and_pointwise_conv_compensate_exactly():
    nodes = [
        conv("c1", "x", "w1", "b1", "h", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        conv("c2", "r", "w2", None, "p"),  # 1x1, no padding: compensable
        helper.make_node("Relu", ["p"], ["q"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["q"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(10, 8, 1, 1),
             "w3": weight(5, 10), "b3": weight(5)}  # fmt: skip
    proto = model(nodes, {"x": [2, 3, 6, 6]}, {"y": [2, 5]}, inits)
    result = _prune_compensated(proto)
    assert result.options["compensated_consumers"] == 2  # c2 and fc; c1's input is the model's


def test_plan_with_compensation_round_trips_through_the_cli(tmp_path, capsys):
    proto = _relu_mlp(bias_after_matmul=True)
    src = tmp_path / "mlp.onnx"
    onnx.save(proto, src)
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in _calib(proto)]))
    out, plan = tmp_path / "pruned.onnx", tmp_path / "plan.json"
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.5", "--calib",
                 str(tmp_path / "calib.npz"), "--compensate", "--no-refit",
                 "--plan-out", str(plan)]) == 0  # fmt: skip
    assert "fluctuation" in capsys.readouterr().out
    assert json.loads(plan.read_text())["fills"]
    assert main(["verify", str(src), str(out)]) == 0
    again = tmp_path / "again.onnx"
    assert main(["prune", str(src), "-o", str(again), "--plan", str(plan)]) == 0
    for f in feeds(proto, seed=9):
        np.testing.assert_allclose(run(onnx.load(out), f)[0], run(onnx.load(again), f)[0],
                                   rtol=1e-6, atol=1e-6)  # fmt: skip

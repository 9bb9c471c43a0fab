"""The command line, in-process and as a subprocess: outputs, reports, exit codes, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphs import conv, feeds, model, run, weight
from onnxprune.cli import main


@pytest.fixture
def cnn(tmp_path) -> Path:
    nodes = [
        conv("c1", "x", "w1", "b1", "a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", "b2", "b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["s"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    inits = {
        "w1": weight(16, 3, 3, 3), "b1": weight(16), "w2": weight(24, 16, 3, 3),
        "b2": weight(24), "wf": weight(5, 24), "bf": weight(5),
    }  # fmt: skip
    path = tmp_path / "cnn.onnx"
    onnx.save(model(nodes, {"x": ["batch", 3, 6, 6]}, {"y": ["batch", 5]}, inits), path)
    return path


def test_analyze_prints_groups_and_json_parses(cnn, capsys):
    assert main(["analyze", str(cnn)]) == 0
    out = capsys.readouterr().out
    assert "exact" in out and "prunable share" in out
    assert main(["analyze", str(cnn), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["exact"] == 2 and report["prunable_share"] == 1.0


def test_prune_writes_model_and_report_then_verify_and_bench(cnn, tmp_path, capsys):
    out, report = tmp_path / "small.onnx", tmp_path / "report"
    assert main(["prune", str(cnn), "-o", str(out), "--ratio", "0.5", "--report", str(report),
                 "--plan-out", str(tmp_path / "plan.json")]) == 0
    text = capsys.readouterr().out
    assert "verification: passed" in text
    assert {p.name for p in report.iterdir()} >= {"report.json", "report.md", "widths.png",
                                                   "macs_by_op.png"}
    data = json.loads((report / "report.json").read_text())
    assert data["verification"]["passed"] and data["after"]["params"] < data["before"]["params"]
    feed = feeds(onnx.load(cnn))[0]
    assert run(onnx.load(out), feed)[0].shape == run(onnx.load(cnn), feed)[0].shape

    assert main(["verify", str(cnn), str(out)]) == 0
    assert "oracle" in capsys.readouterr().out
    assert main(["bench", str(cnn), str(out), "--repeats", "10"]) == 0
    assert "speedup" in capsys.readouterr().out


def test_verify_fails_with_exit_1_on_a_tampered_model(cnn, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    assert main(["prune", str(cnn), "-o", str(out), "--ratio", "0.5"]) == 0
    tampered = onnx.load(out)
    for tensor in tampered.graph.initializer:
        if tensor.name == "w2":
            array = numpy_helper.to_array(tensor).copy()
            array[0, 0] += 1.0
            tensor.CopyFrom(numpy_helper.from_array(array, "w2"))
    onnx.save(tampered, out)
    assert main(["verify", str(cnn), str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out


def _bad(args: list[str], capsys, tmp_path, expect: str) -> None:
    before = set(tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert set(tmp_path.iterdir()) == before, "a failed run must leave no file behind"


def test_missing_path(tmp_path, capsys):
    _bad(["prune", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5"],
         capsys, tmp_path, "does not exist")


def test_not_onnx(tmp_path, capsys):
    path = tmp_path / "notes.onnx"
    path.write_text("hello\n" * 50)
    _bad(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5"],
         capsys, tmp_path, "not a readable ONNX model")


def test_truncated(cnn, tmp_path, capsys):
    data = cnn.read_bytes()
    cnn.write_bytes(data[: len(data) // 2])
    _bad(["prune", str(cnn), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5"],
         capsys, tmp_path, "onnxprune: error")


@pytest.mark.parametrize("ratio", ["1.5", "-0.2", "1"])
def test_ratio_out_of_range(cnn, tmp_path, capsys, ratio):
    _bad(["prune", str(cnn), "-o", str(tmp_path / "o.onnx"), "--ratio", ratio],
         capsys, tmp_path, "--ratio must be in [0, 1)")


def test_exclude_matching_nothing(cnn, tmp_path, capsys):
    _bad(["prune", str(cnn), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5", "--exclude",
          "no_such_node"], capsys, tmp_path, "matches no node or tensor")


def test_output_equal_to_input(cnn, tmp_path, capsys):
    before = cnn.read_bytes()
    _bad(["prune", str(cnn), "-o", str(cnn), "--ratio", "0.5"], capsys, tmp_path,
         "is the input model")
    assert cnn.read_bytes() == before


def test_unknown_custom_op_blocks_and_asks_for_no_verify(tmp_path, capsys):
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Mystery", ["a"], ["m"], name="mystery", domain="com.example"),
        conv("c2", "m", "w2", "b2", "b"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        conv("c3", "r", "w3", None, "y"),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "w2": weight(8, 8, 1, 1),
             "b2": weight(8), "w3": weight(2, 8, 1, 1)}
    path = tmp_path / "custom.onnx"
    onnx.save(model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits,
                    extra_opsets={"com.example": 1}, value_info={"m": [1, 8, 2, 2]}), path)
    assert main(["analyze", str(path)]) == 0
    assert "com.example.Mystery" in capsys.readouterr().out
    _bad(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5"], capsys,
         tmp_path, "--no-verify")
    out = tmp_path / "o.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--no-verify"]) == 0
    assert "unverified" in capsys.readouterr().out and out.exists()


def test_usage_error_exit_code_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "onnxprune", "prune", "x.onnx"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "required" in result.stderr
    helptext = subprocess.run([sys.executable, "-m", "onnxprune", "--help"],
                              capture_output=True, text=True, check=True).stdout
    for command in ("analyze", "prune", "verify", "bench", "examples"):
        assert command in helptext


def test_costs_are_counted_at_bound_or_fed_input_sizes(tmp_path, capsys):
    """Symbolic spatial dims: MACs at a size the model runs at (224x224, named in the output),
    at the --dim shape, or at the size of the first calibration batch."""
    nodes = [conv("c1", "x", "w1", "b1", "a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             conv("c2", "r", "w2", "b2", "y", pads=[1, 1, 1, 1])]  # fmt: skip
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(4, 8, 3, 3), "b2": weight(4)}
    path = tmp_path / "fcn.onnx"
    onnx.save(model(nodes, {"x": ["n", 3, "h", "w"]}, {"y": ["n", 4, "h", "w"]}, inits), path)
    out = tmp_path / "small.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "counted at x 1x3x224x224 (sizes for h, n, w chosen" in printed
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--dim", "x=1,3,6,5"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "counted at x 1x3x6x5" in printed and "chosen" not in printed
    assert f"MACs {(8 * 27 + 4 * 72) * 30:,} ->" in printed
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((4, 3, 7, 7)).astype(np.float32))
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--calib", str(data),
                 "--dim", "n=1"]) == 0  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())
    assert "counted at x 1x3x7x7" in printed and "chosen" not in printed


@pytest.fixture
def residual(tmp_path) -> Path:
    """Three residual MLP blocks (x + W2 relu(W1 x)) and a head."""
    nodes, inits, x = [], {}, "x"
    for i in range(3):
        nodes += [helper.make_node("MatMul", [x, f"w1_{i}"], [f"h{i}"], name=f"mm1_{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("MatMul", [f"r{i}", f"w2_{i}"], [f"y{i}"], name=f"mm2_{i}"),
                  helper.make_node("Add", [x, f"y{i}"], [f"s{i}"], name=f"add{i}")]  # fmt: skip
        inits |= {f"w1_{i}": weight(8, 16), f"w2_{i}": weight(16, 8)}
        x = f"s{i}"
    nodes.append(helper.make_node("MatMul", [x, "head"], ["out"], name="head"))
    inits["head"] = weight(8, 4)
    path = tmp_path / "residual.onnx"
    onnx.save(model(nodes, {"x": ["batch", 8]}, {"out": ["batch", 4]}, inits), path)
    return path


def test_depth_pruning_from_the_command_line(residual, tmp_path, capsys):
    assert main(["analyze", str(residual)]) == 0
    assert "3 removable blocks (residual branches) in 3 layers" in capsys.readouterr().out
    out, plan = tmp_path / "p.onnx", tmp_path / "plan.json"
    assert main(["prune", str(residual), "-o", str(out), "--remove-blocks", "2", "--random",
                 "4", "--report", str(tmp_path / "rep"), "--plan-out", str(plan)]) == 0
    text = capsys.readouterr().out
    assert "dropped 2 of 3 removable blocks" in text and "ranked by output" in text
    assert len(json.loads(plan.read_text())["blocks"]) == 2
    assert (tmp_path / "rep" / "block_scores.png").is_file()
    assert "## Removable blocks (depth)" in (tmp_path / "rep" / "report.md").read_text()
    assert sum(n.op_type == "Add" for n in onnx.load(out).graph.node) == 1
    assert main(["verify", str(residual), str(out)]) == 0
    again = tmp_path / "again.onnx"
    assert main(["prune", str(residual), "-o", str(again), "--plan", str(plan)]) == 0
    feed = feeds(onnx.load(residual))[0]
    np.testing.assert_array_equal(run(onnx.load(out), feed)[0], run(onnx.load(again), feed)[0])
    assert main(["prune", str(residual), "-o", str(tmp_path / "d.onnx"), "--target-params",
                 "0.7", "--depth-only"]) == 0
    assert "weight-norm proxy" in capsys.readouterr().out

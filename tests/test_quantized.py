"""Quantized models from ``onnxruntime.quantization``: the QDQ format (per-tensor and
per-channel int8) prunes exactly, int8 weights sliced with their scales and zero points,
and keeps its accuracy; the integer-arithmetic formats (QOperator, dynamic quantization),
whose masked integer inputs would mean their zero point rather than zero, are blocked with
the op named and never rewritten; a wrong QDQ model fails the oracle's comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

import onnxprune
from accuracy import check_accuracy
from graphs import assert_exact
from onnxprune.cli import main
from onnxprune.verify import compare

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits_cnn.onnx"
CALIB = ROOT / "models" / "digits_calib.npz"


class _Reader(CalibrationDataReader):
    def __init__(self) -> None:
        x = np.load(CALIB)["input"]
        self.batches = iter([{"input": x[i:i + 32]} for i in range(0, len(x), 32)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quantized")
    pre = folder / "pre.onnx"
    quant_pre_process(str(DIGITS), str(pre))
    paths = {}
    for name, fmt, per_channel in (("qdq", QuantFormat.QDQ, False),
                                   ("qdq_per_channel", QuantFormat.QDQ, True),
                                   ("qoperator", QuantFormat.QOperator, True)):  # fmt: skip
        paths[name] = folder / f"{name}.onnx"
        quantize_static(str(pre), str(paths[name]), _Reader(), quant_format=fmt,
                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)  # fmt: skip
    paths["dynamic"] = folder / "dynamic.onnx"
    quantize_dynamic(str(DIGITS), str(paths["dynamic"]), weight_type=QuantType.QInt8)
    return paths


def _accuracy(model: Path | onnx.ModelProto) -> float:
    test = np.load(ROOT / "models" / "digits_test.npz")
    data = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": test["input"]})[0].argmax(1)
                  == test["label"]).mean())  # fmt: skip


@pytest.mark.parametrize("name", ["qdq", "qdq_per_channel"])
def test_qdq_model_prunes_exactly_and_keeps_its_accuracy(quantized, name):
    path = quantized[name]
    original = onnx.load(path)
    int8 = {t.name for t in original.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    result = onnxprune.prune(path, target_macs=0.5, calibration=CALIB)
    assert_exact(result)
    pruned = result.to_proto()
    sliced = {t.name: list(t.dims) for t in pruned.graph.initializer if t.name in int8}
    before = {t.name: list(t.dims) for t in original.graph.initializer if t.name in int8}
    assert sum(sliced[n] != before[n] for n in sliced) >= 4  # the conv and fc weights
    if name == "qdq_per_channel":  # a per-channel scale goes with its weight's channels
        vectors = {t.name: t.dims[0] for t in original.graph.initializer
                   if t.name.endswith("_scale") and len(t.dims) == 1 and t.dims[0] > 1}  # fmt: skip
        after = {t.name: t.dims[0] for t in pruned.graph.initializer if t.name in vectors}
        assert sum(after[n] < vectors[n] for n in after) >= 3
    assert 0.4 < result.cost_after.params / result.cost_before.params < 0.6
    check_accuracy("digits_qdq_original", _accuracy(path))
    measured = _accuracy(pruned)
    print(f"{name}: {_accuracy(path):.2%} -> {measured:.2%} at 50% MACs")
    check_accuracy("digits_qdq_calibrated_50" if name == "qdq" else
                   "digits_qdq_per_channel_calibrated_50", measured)  # fmt: skip


@pytest.mark.parametrize(("name", "op"), [("qoperator", "QLinearConv"),
                                          ("dynamic", "ConvInteger")])  # fmt: skip
def test_integer_arithmetic_is_blocked_with_the_op_named(quantized, tmp_path, capsys, name, op):
    analysis = onnxprune.analyze(quantized[name])
    assert not analysis.prunable
    assert op in analysis.analysis.unknown_ops
    out = tmp_path / "p.onnx"
    assert main(["prune", str(quantized[name]), "-o", str(out), "--ratio", "0.5"]) == 2
    assert "nothing would change" in capsys.readouterr().err and not out.exists()


def test_a_wrong_qdq_model_fails(quantized):
    """Two int8 output columns of the classifier swapped: far beyond any tolerance."""
    path = quantized["qdq"]
    wrong = onnx.load(path)
    gemm = next(n for n in reversed(wrong.graph.node) if n.op_type == "Gemm")
    dq = next(n for n in wrong.graph.node if n.output[0] == gemm.input[1])
    w = next(t for t in wrong.graph.initializer if t.name == dq.input[0])
    array = onnx.numpy_helper.to_array(w).copy()
    array[[0, 1]] = array[[1, 0]]  # torch Linear export: transB=1, rows are outputs
    w.CopyFrom(onnx.numpy_helper.from_array(array, w.name))
    x = np.load(ROOT / "models" / "digits_test.npz")["input"][:8]
    verdict = compare(str(path), wrong, [{"input": x}])
    assert not verdict.passed

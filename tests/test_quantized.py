"""Quantized models from ``onnxruntime.quantization``: the QDQ format (per-tensor and
per-channel int8) prunes exactly, int8 weights sliced with their scales and zero points,
and keeps its accuracy; the QOperator format (QLinearConv, QGemm, QLinearAdd on uint8)
prunes exactly against a masked model that sets removed channels to the zero point (zero
would be wrong, and a test shows it); dynamic quantization (DynamicQuantizeLinear with
ConvInteger/MatMulInteger, per-tensor and per-channel; a BERT and a Llama too) prunes bit
for bit against a masked model that zeroes removed channels before DynamicQuantizeLinear
takes its range (without that mask a test shows it differs); a wrong QDQ model fails the
oracle's comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
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
from graphs import assert_exact, conv, model, weight
from onnxprune.verify import compare, masked_model

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
    for name, per_channel in (("dynamic", False), ("dynamic_per_channel", True)):
        paths[name] = folder / f"{name}.onnx"
        quantize_dynamic(str(DIGITS), str(paths[name]), weight_type=QuantType.QInt8,
                         per_channel=per_channel)  # fmt: skip
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


def test_qoperator_model_prunes_exactly_with_zero_point_masks(quantized):
    """QLinearConv/QGemm read uint8 activations: the oracle masks a removed channel to the
    input's zero point (a Where), and the pruned model equals that exactly."""
    path = quantized["qoperator"]
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"QLinearConv", "QGemm", "QLinearAdd"} <= ops and "Conv" not in ops
    result = onnxprune.prune(path, target_macs=0.5, calibration=CALIB)
    assert_exact(result)
    assert result.verification.max_abs_diff == 0.0
    assert len(result.plan.removed) == 4  # the fc group too: QGemm's output shape is set
    assert any("no float consumer input" in w for w in result.options["warnings"])
    masked = masked_model(result.original, result.plan)
    assert any(n.op_type == "Where" for n in masked.graph)
    measured = _accuracy(result.to_proto())
    print(f"qoperator: {_accuracy(path):.2%} -> {measured:.2%} at 50% MACs")
    check_accuracy("digits_qoperator_50", measured)


def test_a_zeroed_instead_of_zero_point_mask_would_be_wrong(tmp_path):
    """Two QOperator convolutions with no ReLU between them, so the second reads uint8 with a
    zero point far from 0: the pruned model equals the zero-point-masked original exactly,
    and a mask of 0 (what a float input takes) gives a different model."""
    float_model = tmp_path / "two_convs.onnx"
    onnx.save(model([conv("c1", "x", "w1", "b1", "a", pads=[1, 1, 1, 1]),
                     conv("c2", "a", "w2", "b2", "y")],
                    {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]},
                    {"w1": weight(16, 3, 3, 3, seed=0), "b1": weight(16, seed=1),
                     "w2": weight(4, 16, 1, 1, seed=2), "b2": weight(4, seed=3)}),
              float_model)  # fmt: skip
    samples = [{"x": weight(1, 3, 8, 8, seed=10 + k)} for k in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(samples)

        def get_next(self):
            return next(self.feeds, None)

    path = tmp_path / "two_convs_qop.onnx"
    quantize_static(str(float_model), str(path), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    result = onnxprune.prune(path, ratio=0.5, inputs=samples[:2])
    assert_exact(result)
    right = masked_model(result.original, result.plan)
    where = [n for n in right.graph if n.op_type == "Where"]
    assert where and int(where[0].inputs[2].const_value.numpy()) != 0
    wrong = right.clone()
    for node in [n for n in wrong.graph if n.op_type == "Where"]:
        zero = node.inputs[2]
        value = ir.Value(name=f"{node.name}_zero", shape=zero.shape, type=zero.type)
        value.const_value = ir.Tensor(np.zeros_like(zero.const_value.numpy()), name=value.name)
        wrong.graph.register_initializer(value)
        node.replace_input_with(2, value)
    assert compare(right, result.model, samples[2:]).passed
    assert not compare(wrong, result.model, samples[2:]).passed


@pytest.mark.parametrize("name", ["dynamic", "dynamic_per_channel"])
def test_dynamic_quantization_prunes_bit_for_bit(quantized, name):
    path = quantized[name]
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops
    result = onnxprune.prune(path, target_macs=0.5, calibration=CALIB)
    assert_exact(result)
    assert result.verification.max_abs_diff == 0.0
    assert len(result.plan.removed) == 4
    original = onnx.load(path)
    int8 = {t.name: list(t.dims) for t in original.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1}  # fmt: skip
    sliced = {t.name: list(t.dims) for t in result.to_proto().graph.initializer if t.name in int8}
    assert sum(sliced[n] != int8[n] for n in sliced) == len(int8) == 6  # every conv and fc
    measured = _accuracy(result.to_proto())
    print(f"{name}: {_accuracy(path):.2%} -> {measured:.2%} at "
          f"{result.cost_after.macs / result.cost_before.macs:.0%} MACs")
    check_accuracy("digits_dynamic_calibrated_50", measured)


def test_dynamic_quantization_needs_the_mask_before_its_range(quantized):
    """Without the mask at DynamicQuantizeLinear's input, the removed channels still widen the
    range it quantizes with: the masked model then differs from the pruned one."""
    result = onnxprune.prune(quantized["dynamic"], ratio=0.5, calibration=CALIB)
    right = masked_model(result.original, result.plan)
    wrong = right.clone()
    for node in [n for n in wrong.graph if n.op_type == "DynamicQuantizeLinear"]:
        mul = node.inputs[0].producer()
        if mul is not None and mul.name.startswith("onnxprune_mask_"):
            node.replace_input_with(0, mul.inputs[0])
    x = np.load(ROOT / "models" / "digits_test.npz")["input"][:16]
    assert compare(right, result.model, [{"input": x}]).passed
    assert not compare(wrong, result.model, [{"input": x}]).passed


@pytest.mark.zoo
@pytest.mark.parametrize(("name", "exporter"), [("bert", "torchscript"), ("llama", "dynamo")])
def test_dynamically_quantized_transformers_prune_heads_bit_for_bit(name, exporter, tmp_path):
    import transformer_zoo

    path = tmp_path / f"{name}_dynamic.onnx"
    quantize_dynamic(str(transformer_zoo.export(name, exporter)), str(path),
                     weight_type=QuantType.QInt8)  # fmt: skip
    assert "MatMulInteger" in {n.op_type for n in onnx.load(path).graph.node}
    result = onnxprune.prune(path, ratio=0.5, inputs=transformer_zoo.verification_feeds(name))
    assert_exact(result)
    assert result.verification.max_abs_diff == 0.0
    heads = [g for g in result.groups if g.exact and g.atom_size > 1]
    assert heads and all(g.id in result.plan.removed for g in heads)


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

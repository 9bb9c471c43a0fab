"""Half-precision models: float16 weights and activations, as onnxconverter-common's float16
conversion and a torch ``.half()`` export write them, prune, pass the oracle at the float16
tolerance and keep their accuracy; a wrong float16 model still fails; bfloat16 weights read
through a Cast prune and verify like float32."""

from __future__ import annotations

import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnxconverter_common import float16

import onnxprune
import zoo
from graphs import assert_exact
from onnxprune.verify import compare

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits_cnn.onnx"


def _half(tmp_path: Path, keep_io_types: bool) -> Path:
    path = tmp_path / f"digits16-{keep_io_types}.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(DIGITS), keep_io_types=keep_io_types),
              path)  # fmt: skip
    return path


def _accuracy(model: onnx.ModelProto | str, dtype=np.float32) -> float:
    test = np.load(ROOT / "models" / "digits_test.npz")
    data = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": test["input"].astype(dtype)})[0]
    return float((logits.argmax(1) == test["label"]).mean())


def test_float16_conversion_prunes_exactly_and_keeps_its_accuracy(tmp_path):
    """Float16 inside, float32 at the interface (keep_io_types), calibrated on training
    images: at half the MACs the accuracy is the float32 model's to within a test image."""
    sys.path.insert(0, str(ROOT / "tools"))
    from train_digits import load_split

    path = _half(tmp_path, keep_io_types=True)
    weights = [t for t in onnx.load(path).graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    calibration = [{"input": load_split()[0][:256]}]
    half = onnxprune.prune(path, target_macs=0.5, calibration=calibration)
    full = onnxprune.prune(DIGITS, target_macs=0.5, calibration=calibration)
    assert_exact(half)
    assert {t.const_value.dtype for t in half.model.graph.initializers.values()
            if len(t.const_value.shape) >= 2} == {ir.DataType.FLOAT16}  # fmt: skip
    a_half, a_full = _accuracy(half.to_proto()), _accuracy(full.to_proto())
    print(f"digits at 50% MACs: float16 {a_half:.2%}, float32 {a_full:.2%}")
    assert abs(a_half - a_full) <= 1 / 450 + 1e-9
    assert _accuracy(str(path)) >= _accuracy(str(DIGITS)) - 1 / 450


def test_float16_interface_is_verified_at_the_float16_tolerance(tmp_path):
    path = _half(tmp_path, keep_io_types=False)
    result = onnxprune.prune(path, ratio=0.5)
    assert_exact(result)
    assert "float16 outputs compared at rtol 0.01" in result.verification.note
    full = onnxprune.prune(DIGITS, ratio=0.5)
    assert abs(_accuracy(result.to_proto(), np.float16) - _accuracy(full.to_proto())) <= 2 / 450


def test_a_wrong_float16_model_fails(tmp_path):
    """Swapping two output columns of the float16 classifier is far beyond the float16
    tolerance: the comparison the oracle uses fails."""
    path = _half(tmp_path, keep_io_types=False)
    wrong = onnx.load(path)
    last = next(n for n in reversed(wrong.graph.node) if n.op_type == "Gemm")
    w = next(t for t in wrong.graph.initializer if t.name == last.input[1])
    array = onnx.numpy_helper.to_array(w).copy()
    trans = any(a.name == "transB" and a.i for a in last.attribute)
    if trans:
        array[[0, 1]] = array[[1, 0]]
    else:
        array[:, [0, 1]] = array[:, [1, 0]]
    w.CopyFrom(onnx.numpy_helper.from_array(array, w.name))
    x = np.load(ROOT / "models" / "digits_test.npz")["input"][:8].astype(np.float16)
    verdict = compare(str(path), wrong, [{"input": x}])
    assert not verdict.passed and verdict.failed == [wrong.graph.output[0].name]


def _bfloat16(tmp_path: Path) -> Path:
    """The digits CNN with bfloat16 weights, cast to float32 where it computes."""
    model = ir.load(DIGITS)
    graph = model.graph
    for value in list(graph.initializers.values()):
        tensor = value.const_value
        if tensor.dtype != ir.DataType.FLOAT or len(tensor.shape) < 2:
            continue
        stored = ir.Value(name=f"{value.name}_bf16", shape=value.shape,
                          type=ir.TensorType(ir.DataType.BFLOAT16))  # fmt: skip
        stored.const_value = ir.tensor(tensor.numpy().astype(ml_dtypes.bfloat16),
                                       dtype=ir.DataType.BFLOAT16, name=stored.name)  # fmt: skip
        graph.register_initializer(stored)
        cast = ir.node("Cast", [stored], attributes={"to": ir.DataType.FLOAT},
                       name=f"{value.name}_cast")  # fmt: skip
        graph.insert_before(next(iter(graph)), cast)
        value.replace_all_uses_with(cast.outputs[0])
        graph.initializers.pop(value.name)
    path = tmp_path / "digits_bf16.onnx"
    ir.save(model, path)
    return path


def test_bfloat16_weights_prune_through_their_cast(tmp_path):
    """bfloat16 weights read through a Cast (how exporters keep them on CPUs without bfloat16
    kernels): the weight slices and the oracle runs as for float32."""
    path = _bfloat16(tmp_path)
    result = onnxprune.prune(path, ratio=0.5)
    assert_exact(result)
    stored = [v for v in result.model.graph.initializers.values()
              if v.const_value.dtype == ir.DataType.BFLOAT16]  # fmt: skip
    assert stored and result.cost_after.params < 0.7 * result.cost_before.params


def _torch_half(name: str) -> Path:
    """Torchvision ``name`` as ``.half()`` on the CPU, exported by the TorchScript exporter:
    float16 weights, activations and interface."""

    def write(tmp: Path) -> None:
        import torch

        model = zoo.ZOO_MODELS[name]().half()
        size = zoo.INPUT_SIZE[name]
        with zoo.quiet(), torch.no_grad():
            torch.onnx.export(model, (torch.randn(1, 3, size, size).half(),), str(tmp),
                              dynamo=False, input_names=["input"], output_names=["logits"],
                              opset_version=17, dynamic_axes={"input": {0: "batch"}})  # fmt: skip

    return zoo.cached(f"{name}-torchscript-half.onnx", write)


@pytest.mark.zoo
def test_torch_half_export_prunes_exactly():
    path = _torch_half("resnet18")
    result = onnxprune.prune(path, ratio=0.5)
    assert_exact(result)
    assert "float16 outputs compared" in result.verification.note
    assert result.verification.input_shapes == [{"input": [1, 3, 64, 64]},
                                                {"input": [2, 3, 64, 64]}]  # fmt: skip
    dtypes = {v.const_value.dtype for v in result.model.graph.initializers.values()
              if len(v.const_value.shape) == 4}  # fmt: skip
    assert dtypes == {ir.DataType.FLOAT16}
    assert result.cost_after.params < 0.3 * result.cost_before.params

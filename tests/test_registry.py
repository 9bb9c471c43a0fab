"""The rule registry: one rule per op and opset range; duplicates are errors."""

from __future__ import annotations

import pytest

from onnxprune.rules import channel_rule, lookup, registered_ops


def test_core_ops_have_rules():
    for op in ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Concat",
               "Split", "Slice", "Reshape", "Flatten", "Transpose", "Relu", "HardSwish", "Add",
               "Mul", "GlobalAveragePool", "ReduceMean", "Pad", "Resize", "Dropout", "Cast"):
        assert lookup("", op, 17) is not None, op
    assert lookup("com.example", "Mystery", 1) is None
    assert "ai.onnx::Conv" in registered_ops()


def test_registering_an_op_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):

        @channel_rule("Conv")
        def another_conv(node, ctx):  # pragma: no cover - never registered
            pass


def test_disjoint_opset_ranges_may_coexist():
    @channel_rule("TestOnlyOp", domain="test.registry", opsets=(1, 10))
    def old(node, ctx):
        pass

    @channel_rule("TestOnlyOp", domain="test.registry", opsets=(11, None))
    def new(node, ctx):
        pass

    assert lookup("test.registry", "TestOnlyOp", 5) is old
    assert lookup("test.registry", "TestOnlyOp", 17) is new

"""The oracle itself: it must pass correct rewrites and catch wrong ones."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import helper

import onnxprune
from graphs import conv, feeds, model, weight
from onnxprune.verify import compare, masked_model, verify_plan


def proto():
    nodes = [
        conv("c1", "x", "w1", "b1", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "w2", "b2", "y"),
    ]
    inits = {"w1": weight(8, 3, 1, 1), "b1": weight(8), "w2": weight(2, 8, 1, 1), "b2": weight(2)}
    return model(nodes, {"x": [1, 3, 2, 2]}, {"y": [1, 2, 2, 2]}, inits)


def test_masked_model_inserts_one_mul_per_consumer_and_slices_nothing():
    result = onnxprune.prune(proto(), ratio=0.5, inputs=feeds(proto()))
    masked = masked_model(result.original, result.plan)
    muls = [n for n in masked.graph if n.op_type == "Mul"]
    assert len(muls) == 1 and muls[0].outputs[0].uses()[0][0].name == "c2"
    sizes = {v.name: v.const_value.shape for v in masked.graph.initializers.values()}
    assert sizes["w1"] == (8, 3, 1, 1)


def test_oracle_catches_a_wrong_slice():
    result = onnxprune.prune(proto(), ratio=0.5, inputs=feeds(proto()))
    broken = ir.from_proto(ir.to_proto(result.model))
    w2 = broken.graph.initializers["w2"]
    array = w2.const_value.numpy().copy()
    array[:, [0, 1]] = array[:, [1, 0]]  # read the kept channels in the wrong order
    w2.const_value = ir.Tensor(array, name="w2")
    verdict = verify_plan(result.original, broken, result.plan, feeds(proto()))
    assert not verdict.passed and verdict.max_abs_diff > 1e-3


def test_masked_model_differs_from_the_original_when_channels_go():
    result = onnxprune.prune(proto(), ratio=0.5, inputs=feeds(proto()))
    verdict = compare(result.original, masked_model(result.original, result.plan), feeds(proto()))
    assert not verdict.passed


def test_compare_identical_models_is_exact():
    model = proto()
    verdict = compare(model, model, feeds(model))
    assert verdict.passed and verdict.max_abs_diff == 0.0
    assert np.isfinite(verdict.max_rel_diff)

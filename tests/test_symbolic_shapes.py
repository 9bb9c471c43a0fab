"""onnxruntime's symbolic shape inference (onnxprune/symbolic_shapes.py) runs without importing
torch: ``onnxruntime.tools``' package init imports torch wherever it is installed (as in this
test environment), which once cost every command on a symbolic model 1.4 s."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from onnx import helper

from graphs import model
from onnxprune.symbolic_shapes import infer_symbolic_shapes


def test_a_symbolic_size_is_followed_through_a_shape_computation():
    # Shape -> Gather -> Unsqueeze -> Concat -> Reshape: ONNX's inference loses the length
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "i1"], ["n"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["n", "zero"], ["n1"], name="unsq"),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]  # fmt: skip
    proto = model(nodes, {"x": [2, "L", 3]}, {"y": ["a", "b"]},
                  {"i1": np.array(1, np.int64), "zero": np.array([0], np.int64),
                   "minus1": np.array([-1], np.int64)})  # fmt: skip
    shapes = infer_symbolic_shapes(proto)
    assert shapes is not None and shapes["y"] == ["L", 6]


def test_loading_it_does_not_import_torch():
    code = ("import sys, onnxprune.symbolic_shapes as s; assert s._symbolic_shape_infer() "
            "is not None; print('torch' in sys.modules)")  # fmt: skip
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)  # fmt: skip
    assert found.stdout.strip() == "False"

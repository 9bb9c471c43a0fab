"""Remove dead nodes and initializers, refresh shapes and run the full ONNX checker.

Shapes of intermediate values are cleared and re-inferred, so no stale ``value_info`` from
before a rewrite survives; the model's inputs and outputs keep their declared shapes.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from onnxprune.errors import VerificationError
from onnxprune.model_io import PROTOBUF_LIMIT, model_nbytes


class CleanupPass(InPlacePass):
    """Dead-code elimination, shape re-inference and ``onnx.checker`` (full check)."""

    def __init__(self, check: bool = True) -> None:
        super().__init__()
        self.check = check

    def call(self, model: ir.Model) -> PassResult:
        RemoveUnusedNodesPass()(model)
        graph = model.graph
        interface = {id(v) for v in (*graph.inputs, *graph.outputs)}
        for node in graph:
            for value in node.outputs:
                if value is not None and id(value) not in interface:
                    value.shape = None
        ShapeInferencePass()(model)
        if self.check and model_nbytes(model) < PROTOBUF_LIMIT:
            try:
                onnx.checker.check_model(ir.to_proto(model), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                raise VerificationError(f"the rewritten model fails onnx.checker: {exc}") from exc
        return PassResult(model, True)

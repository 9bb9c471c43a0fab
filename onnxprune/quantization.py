"""Where quantized ops keep their integer tensors and quantization parameters.

``QUANTIZED_INPUTS``: op type -> {integer input: (its scale input or None, its zero-point
input)}; ``WEIGHT_INPUT``: op type -> the input holding its quantized weight;
``QUANTIZED_TYPES``: the integer types a quantized weight is stored in. Read by the parameter
count, the dequantized scores, the oracle's zero-point masks and its weight check.
"""

from __future__ import annotations

import onnx_ir as ir

QUANTIZED_INPUTS: dict[str, dict[int, tuple[int | None, int]]] = {
    "DequantizeLinear": {0: (1, 2)},
    "QLinearConv": {0: (1, 2), 3: (4, 5)},
    "QLinearMatMul": {0: (1, 2), 3: (4, 5)},
    "QGemm": {0: (1, 2), 3: (4, 5)},
    "ConvInteger": {0: (None, 2), 1: (None, 3)},
    "MatMulInteger": {0: (None, 2), 1: (None, 3)},
}

WEIGHT_INPUT: dict[str, int] = {"DequantizeLinear": 0, "QLinearConv": 3, "QLinearMatMul": 3,
                                "QGemm": 3, "ConvInteger": 1, "MatMulInteger": 1}  # fmt: skip

QUANTIZED_TYPES = frozenset({ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT4,
                             ir.DataType.UINT4})  # fmt: skip

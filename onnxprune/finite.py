"""Non-finite values: where NaN and inf are reported or refused.

Rules: non-finite weights in the input model are reported (a warning per initializer); refit
weights and compensation fills, computed from calibration statistics, must be finite before
anything is written (calibration data itself is checked in :mod:`onnxprune.calibration`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxprune.errors import VerificationError
from onnxprune.plan import RemovalPlan
from onnxprune.weights import reading


def nonfinite_weights(model: ir.Model, where: str) -> list[str]:
    """A warning per float initializer of ``model`` holding NaN or inf (tensors held in
    external data are read one at a time)."""
    out = []
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or not tensor.dtype.is_floating_point():
            continue
        with reading(tensor) as array:
            bad = _nonfinite_count(array)
            size = array.size
        if bad:
            out.append(f"{where} has non-finite values in initializer '{name}' "
                       f"({bad} of {size})")  # fmt: skip
    return out


def _nonfinite_count(array: np.ndarray) -> int:
    """NaN/inf elements of a float array; a finite sum proves there are none (one pass, no
    temporary array), else they are counted."""
    if array.dtype.kind != "f":
        return 0
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return 0
    return int(np.sum(~np.isfinite(array)))


def check_finite_corrections(plan: RemovalPlan) -> None:
    """Refit weights and compensation fills must be finite before anything is written."""
    for name, array in plan.weight_updates.items():
        if not np.all(np.isfinite(array)):
            raise VerificationError(f"the least-squares refit of '{name}' is not finite (the "
                                    "calibration statistics hold NaN/inf); check the data or "
                                    "use --no-refit")  # fmt: skip
    for index, fill in plan.fills.items():
        if not np.all(np.isfinite(fill)):
            node = plan.masks[index].consumer.node
            raise VerificationError(f"the compensation of consumer '{node}' is not finite; "
                                    "check the calibration data")  # fmt: skip

"""Non-finite values: where NaN and inf are reported or refused.

Rules: non-finite weights in the input model are reported (a warning per initializer); refit
weights and compensation fills, computed from calibration statistics, must be finite before
anything is written (calibration data itself is checked in :mod:`onnxprune.calibration`).

A float tensor whose every element a finite sum of |w| or w² has covered (the weight norms of
:mod:`onnxprune.importance`) is finite, and is not read again for the report (``seen``): one
pass over a model's weights instead of two. A sum that overflows proves nothing: that tensor
is read and counted as any other.
"""

from __future__ import annotations

import weakref

import numpy as np
import onnx_ir as ir

from onnxprune.errors import VerificationError
from onnxprune.plan import RemovalPlan
from onnxprune.weights import reading

#: Tensors shown finite by a sum over all their elements (``seen``).
_FINITE: weakref.WeakSet[ir.TensorProtocol] = weakref.WeakSet()


def seen(tensor: ir.TensorProtocol, array: np.ndarray, sums: np.ndarray) -> None:
    """Record ``tensor`` as finite when ``sums`` (of |w| or w² over every element of its
    values ``array``, a float array) are all finite."""
    if array.dtype.kind == "f" and np.isfinite(sums).all():
        _FINITE.add(tensor)


def nonfinite_weights(model: ir.Model, where: str) -> list[str]:
    """A warning per float initializer of ``model`` holding NaN or inf (tensors held in
    external data are read one at a time; those ``seen`` finite are not read)."""
    out = []
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or not tensor.dtype.is_floating_point():
            continue
        if tensor in _FINITE:  # a mark serves this report only (an array can change after)
            _FINITE.discard(tensor)
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

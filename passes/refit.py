"""Least-squares refit of a consumer's kept weights (as SPA's OBSPA / ZipLM, ridge-regularised).

A consumer ``y = x W`` (MatMul/Gemm with a constant weight, Conv with ``group`` 1 and any
kernel: convolution is linear in each input channel, so ``x_R ~ x_K B`` at every pixel gives
``conv(x_R, W_R) ~ conv(x_K, B W_R)`` kernel position by kernel position, zero padding included)
loses input channels R and keeps K. From calibration statistics, x_R is predicted from x_K by
linear regression, ``x_R ~ x_K B``, and the prediction is folded into the kept weights: ``W_K' =
W_K + B W_R``. Uncentred (``B = G_KK^-1 G_KR`` with the Gram matrix G = E[x xᵀ]), or, with
compensation, centred: ``B = C_KK^-1 C_KR`` with the covariance C, and the removed channels'
remaining constant part ``mu_R - mu_K B`` becomes their fill (folded into the bias by
:class:`~onnxprune.passes.compensate.CompensatePass`). The ridge term is ``ridge`` times the
mean diagonal of the matrix being inverted. A padded Conv cannot take a constant as a bias (its
borders see zeros), so its regression is uncentred even with compensation.

The oracle stays exact: the masked original carries the same updated weights and fills; the
refit itself is judged by accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune.passes.compensate import bias_foldable, compensable_masks, weight_axes
from onnxprune.plan import RemovalPlan
from onnxprune.statistics import ChannelStats, Key

#: Ridge term of the regressions, times the mean diagonal of the matrix inverted.
RIDGE = 1e-2


def refit_updates(
    model: ir.Model,
    plan: RemovalPlan,
    stats: Mapping[Key, ChannelStats],
    *,
    centered: bool,
    ridge: float = RIDGE,
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """(weight name -> refit weight of the original shape, mask index -> fill values)."""
    updates: dict[str, np.ndarray] = {}
    fills: dict[int, np.ndarray] = {}
    for index, mask, node, channel in compensable_masks(model, plan, stats, fold_bias=False):
        if channel.gram is None or channel.count == 0:
            continue
        center = centered and bias_foldable(node)
        removed = mask.removed
        kept = np.setdiff1d(np.arange(mask.size), removed)
        mean = channel.mean
        second = channel.gram / channel.count
        matrix = second - np.outer(mean, mean) if center else second
        a = matrix[np.ix_(kept, kept)]
        a = a + ridge * max(float(np.trace(a)) / max(kept.size, 1), 1e-12) * np.eye(kept.size)
        b = np.linalg.solve(a, matrix[np.ix_(kept, removed)])  # (K, R)
        w_value = node.inputs[1]
        original = updates.get(w_value.name, w_value.const_value.numpy())
        in_axis, out_axis = weight_axes(node)
        w = np.moveaxis(original.astype(np.float64), (in_axis, out_axis), (0, 1))
        new = w.copy()
        new[kept] += np.tensordot(b, w[removed], axes=(1, 0))
        updates[w_value.name] = np.moveaxis(new, (0, 1), (in_axis, out_axis)).astype(
            original.dtype)
        if center:
            fills[index] = mean[removed] - mean[kept] @ b
    return updates, fills


def apply_weight_updates(model: ir.Model, updates: Mapping[str, np.ndarray]) -> None:
    """Replace the named initializers' values (same shapes) in place."""
    initializers = model.graph.initializers
    for name, array in updates.items():
        initializers[name].const_value = ir.Tensor(np.ascontiguousarray(array), name=name)

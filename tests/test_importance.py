"""Weight norms per channel: every block of a weight counted once, at float64 precision."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune import importance


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("power", [1, 2])
def test_per_channel_sums_equal_a_float64_reference_through_every_block(monkeypatch, dtype,
                                                                        axis, power):  # fmt: skip
    """Blocks made small (8 elements per run, 64 per block) so that a 6 x 20 x 12 weight is
    read in many blocks along every axis: each channel's sum is the float64 sum over the
    other axes (float32 runs within 1e-6)."""
    monkeypatch.setattr(importance, "_RUN", 8)
    monkeypatch.setattr(importance, "_BLOCK", 64)
    weight = np.random.default_rng(0).standard_normal((6, 20, 12)).astype(dtype)
    wide = np.abs(weight.astype(np.float64)) ** power
    reference = wide.sum(axis=tuple(a for a in range(3) if a != axis))
    got = importance._per_position(weight, axis, power)
    assert got.dtype == np.float64 and got.shape == (weight.shape[axis],)
    np.testing.assert_allclose(got, reference, rtol=1e-6)

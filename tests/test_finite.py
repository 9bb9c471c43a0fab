"""Non-finite input weights are reported (onnxprune/finite.py), whether the weight norms read
the tensor first (and showed it finite or not) or the report reads it itself; a norm that
overflows proves nothing, so a large but finite weight is not reported."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import onnxprune
from graphs import conv, model, weight


def _cnn(w2: np.ndarray, scale: np.ndarray) -> object:
    """conv(w1) -> relu -> conv(w2) -> Mul(scale): w1/w2 are scored, ``scale`` is read by
    no group (it scales the output, which is not pruned)."""
    nodes = [conv("c1", "x", "w1", "b1", "a"), helper.make_node("Relu", ["a"], ["r"], name="relu"),
             conv("c2", "r", "w2", "b2", "y0"),
             helper.make_node("Mul", ["y0", "scale"], ["y"], name="scale")]  # fmt: skip
    inits = {"w1": weight(8, 3, 1, 1, seed=1), "b1": weight(8, seed=2), "w2": w2,
             "b2": weight(4, seed=4), "scale": scale}  # fmt: skip
    return model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 4, 4, 4]}, inits)


def _reported(proto) -> list[str]:
    result = onnxprune.prune(proto, ratio=0.5, verify=False)
    return [w for w in result.options["warnings"] if "non-finite" in w]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_scored_weight_is_reported(bad):
    w2 = weight(4, 8, 1, 1, seed=3)
    w2[1, 5, 0, 0] = bad
    reported = _reported(_cnn(w2, np.ones(1, np.float32)))
    assert len(reported) == 1 and "'w2' (1 of 32)" in reported[0]


def test_a_non_finite_weight_no_group_reads_is_reported():
    reported = _reported(_cnn(weight(4, 8, 1, 1, seed=3), np.array([np.nan], np.float32)))
    assert len(reported) == 1 and "'scale'" in reported[0]


def test_a_finite_weight_whose_norm_overflows_is_not_reported():
    w2 = weight(4, 8, 1, 1, seed=3)
    w2[0, 0, 0, 0] = 3e38  # its square overflows float32: the norm is inf, the weight finite
    assert _reported(_cnn(w2, np.ones(1, np.float32))) == []
